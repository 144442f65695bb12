//! Build models by timm-style name.

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::classifier::ImageClassifier;
use crate::deit::{DeiT, DeiTConfig};
use crate::info::{DataConfig, ModelInfo};
use crate::resnet::{ResNet, ResNetConfig};

/// Options shared by all registry models.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// Number of logits; `None` = the model's default (1000 for ImageNet names, 10 for CIFAR ones).
    pub num_classes: Option<usize>,
    /// DeiT only: stochastic depth of the last block (linear schedule from 0). Must be 0 for ResNets.
    pub drop_path_rate: f64,
    /// ResNet only: FFCV BlurPool on strided convs with >= 16 input channels.
    pub blurpool: bool,
    /// DeiT only: input resolution (sets `pos_embed`); `None` = the name's (224 or 32).
    /// ResNets are resolution-agnostic and ignore it.
    pub img_size: Option<usize>,
    /// Seed of the weight initialisation: equal seeds give identical weights.
    pub seed: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            num_classes: None,
            drop_path_rate: 0.0,
            blurpool: false,
            img_size: None,
            seed: 0,
        }
    }
}

#[derive(Clone, Copy)]
enum Arch {
    ResNet(fn(usize) -> ResNetConfig),
    ResNetCifarStem(fn(usize) -> ResNetConfig),
    CifarHe(usize),
    DeiT {
        make: fn(usize, usize, usize) -> DeiTConfig,
        img: usize,
        patch: usize,
    },
}

/// The images an entry is made for: what its declared evaluation input follows.
#[derive(Clone, Copy)]
enum Images {
    ImageNet,
    Cifar,
}

struct Entry {
    name: &'static str,
    arch: Arch,
    default_classes: usize,
    images: Images,
    summary: &'static str,
}

impl Entry {
    /// The model's declared facts at input size `img_size` (DeiT; `None` = the name's).
    fn info(&self, img_size: Option<usize>) -> ModelInfo {
        match (self.arch, self.images) {
            (Arch::DeiT { img, .. }, images) => {
                let size = img_size.unwrap_or(img);
                ModelInfo::deit(match images {
                    Images::ImageNet => DataConfig::imagenet_deit(size),
                    Images::Cifar => DataConfig::cifar(size),
                })
            }
            (_, Images::ImageNet) => ModelInfo::resnet(DataConfig::IMAGENET_RESNET),
            (_, Images::Cifar) => ModelInfo::resnet(DataConfig::cifar(32)),
        }
    }
}

const REGISTRY: &[Entry] = &[
    Entry {
        name: "resnet18",
        arch: Arch::ResNet(ResNetConfig::resnet18),
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "torchvision ResNet-18",
    },
    Entry {
        name: "resnet34",
        arch: Arch::ResNet(ResNetConfig::resnet34),
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "torchvision ResNet-34",
    },
    Entry {
        name: "resnet50",
        arch: Arch::ResNet(ResNetConfig::resnet50),
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "torchvision ResNet-50 (v1.5)",
    },
    Entry {
        name: "resnet101",
        arch: Arch::ResNet(ResNetConfig::resnet101),
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "torchvision ResNet-101",
    },
    Entry {
        name: "resnet152",
        arch: Arch::ResNet(ResNetConfig::resnet152),
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "torchvision ResNet-152",
    },
    Entry {
        name: "resnet18_cifar",
        arch: Arch::ResNetCifarStem(ResNetConfig::resnet18),
        default_classes: 10,
        images: Images::Cifar,
        summary: "ResNet-18, 3x3 stride-1 stem, no max-pool",
    },
    Entry {
        name: "resnet50_cifar",
        arch: Arch::ResNetCifarStem(ResNetConfig::resnet50),
        default_classes: 10,
        images: Images::Cifar,
        summary: "ResNet-50, 3x3 stride-1 stem, no max-pool",
    },
    Entry {
        name: "resnet20_cifar",
        arch: Arch::CifarHe(20),
        default_classes: 10,
        images: Images::Cifar,
        summary: "He et al. CIFAR ResNet-20 (16/32/64, option-B shortcuts)",
    },
    Entry {
        name: "resnet32_cifar",
        arch: Arch::CifarHe(32),
        default_classes: 10,
        images: Images::Cifar,
        summary: "He et al. CIFAR ResNet-32 (16/32/64, option-B shortcuts)",
    },
    Entry {
        name: "resnet56_cifar",
        arch: Arch::CifarHe(56),
        default_classes: 10,
        images: Images::Cifar,
        summary: "He et al. CIFAR ResNet-56 (16/32/64, option-B shortcuts)",
    },
    Entry {
        name: "deit_tiny_patch16_224",
        arch: Arch::DeiT {
            make: DeiTConfig::tiny,
            img: 224,
            patch: 16,
        },
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "timm DeiT-Tiny (192, 12 blocks, 3 heads)",
    },
    Entry {
        name: "deit_small_patch16_224",
        arch: Arch::DeiT {
            make: DeiTConfig::small,
            img: 224,
            patch: 16,
        },
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "timm DeiT-Small (384, 12 blocks, 6 heads)",
    },
    Entry {
        name: "deit_base_patch16_224",
        arch: Arch::DeiT {
            make: DeiTConfig::base_model,
            img: 224,
            patch: 16,
        },
        default_classes: 1000,
        images: Images::ImageNet,
        summary: "timm DeiT-Base (768, 12 blocks, 12 heads)",
    },
    Entry {
        name: "deit_tiny_patch4_32",
        arch: Arch::DeiT {
            make: DeiTConfig::tiny,
            img: 32,
            patch: 4,
        },
        default_classes: 10,
        images: Images::Cifar,
        summary: "DeiT-Tiny for 32x32 inputs, patch 4 (65 tokens)",
    },
    Entry {
        name: "deit_small_patch4_32",
        arch: Arch::DeiT {
            make: DeiTConfig::small,
            img: 32,
            patch: 4,
        },
        default_classes: 10,
        images: Images::Cifar,
        summary: "DeiT-Small for 32x32 inputs, patch 4 (65 tokens)",
    },
    Entry {
        name: "deit_base_patch4_32",
        arch: Arch::DeiT {
            make: DeiTConfig::base_model,
            img: 32,
            patch: 4,
        },
        default_classes: 10,
        images: Images::Cifar,
        summary: "DeiT-Base for 32x32 inputs, patch 4 (65 tokens)",
    },
];

/// The architecture family of a registered model: what decides which binary trains it, whether
/// it has stochastic depth or BlurPool, and whether it has a spatial feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// torchvision ResNets and the CIFAR ResNets (a spatial last stage, BlurPool optional).
    ResNet,
    /// DeiT vision transformers (tokens, stochastic depth).
    DeiT,
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFamily::ResNet => "ResNet",
            ModelFamily::DeiT => "DeiT",
        })
    }
}

/// The family of the registered model `name` (None for unknown names).
pub fn model_family(name: &str) -> Option<ModelFamily> {
    model_info(name).map(|i| i.family)
}

/// What the registered model `name` declares (None for unknown names), at its default input
/// size; a built model's [`ImageClassifier::info`] reflects its options.
pub fn model_info(name: &str) -> Option<ModelInfo> {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.info(None))
}

/// All registered model names, in a stable order.
pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// A one-line description of a registered model.
pub fn model_summary(name: &str) -> Option<&'static str> {
    REGISTRY.iter().find(|e| e.name == name).map(|e| e.summary)
}

/// Builds the model `name` with fresh (seeded) weights on `device`.
pub fn create_model(
    name: &str,
    options: &ModelOptions,
    device: &Device,
) -> Result<Box<dyn ImageClassifier>> {
    let entry = REGISTRY.iter().find(|e| e.name == name).with_context(|| {
        format!(
            "unknown model `{name}`; known models: {}",
            model_names().join(", ")
        )
    })?;
    let classes = options.num_classes.unwrap_or(entry.default_classes);
    if classes == 0 {
        bail!("num_classes must be at least 1");
    }
    let resnet = |mut config: ResNetConfig| -> Result<Box<dyn ImageClassifier>> {
        if options.drop_path_rate != 0.0 {
            bail!("{name}: drop_path_rate is only supported by DeiT models (torchvision ResNets have none)");
        }
        config.blurpool = options.blurpool;
        let info = entry.info(None);
        Ok(Box::new(
            ResNet::new(name, config, device, options.seed)?.with_info(info),
        ))
    };
    match entry.arch {
        Arch::ResNet(make) => resnet(make(classes)),
        Arch::ResNetCifarStem(make) => resnet(make(classes).with_cifar_stem()),
        Arch::CifarHe(depth) => resnet(ResNetConfig::cifar_he(depth, classes)?),
        Arch::DeiT { make, img, patch } => {
            if options.blurpool {
                bail!("{name}: blurpool applies to strided convolutions of ResNets only");
            }
            let mut config = make(options.img_size.unwrap_or(img), patch, classes);
            config.drop_path_rate = options.drop_path_rate;
            let info = entry.info(options.img_size);
            Ok(Box::new(
                DeiT::new(name, config, device, options.seed)
                    .with_context(|| format!("building {name}"))?
                    .with_info(info),
            ))
        }
    }
}
