//! Training recipes: every setting of a run in one serializable struct, with presets matching the
//! paper's and the official code's recipes. The binaries start from a preset and
//! override single fields from the command line; the resolved configuration is printed and saved
//! next to the checkpoints.

use std::path::PathBuf;

use anyhow::{bail, Result};
use maxsup_loss::LossKind;
use serde::{Deserialize, Serialize};

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataSource {
    /// CIFAR-10 binary batches (`data/fetch-cifar10.sh` installs them).
    Cifar10 { dir: PathBuf },
    /// Fashion-MNIST IDX files (`data/fetch-fashion-mnist.sh`), padded to 32x32 RGB: the transfer
    /// target of the CPU linear-probe experiment.
    FashionMnist { dir: PathBuf },
    /// ImageFolder trees `<root>/train/<class>/...` and `<root>/val/<class>/...`.
    Folder { root: PathBuf },
    /// The official zip cache: `<root>/{train,val}.zip` + `<root>/{train,val}_map.txt`; `cache`
    /// reads the images into memory (the official `--cache`).
    Zip { root: PathBuf, cache: bool },
}

/// The optimizer and its own hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    /// SGD with momentum (and Nesterov); no weight decay on BatchNorm parameters and biases.
    Sgd { momentum: f64, nesterov: bool },
    /// AdamW; no weight decay on `pos_embed`, `cls_token`, norms and biases (timm's rule).
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

/// The learning-rate schedule (see `maxsup_optim::schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ScheduleConfig {
    /// `lr * gamma^(epoch // step_size)` (torchvision's 90-epoch recipe: 30, 0.1).
    Step { step_size: usize, gamma: f64 },
    /// `lr * gamma^(milestones passed)` (the paper's CIFAR-100 recipe: 60/120/160, 0.2).
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// Linear warmup from `warmup_lr` over `warmup_epochs`, then cosine down to `min_lr`.
    Cosine {
        warmup_epochs: usize,
        warmup_lr: f64,
        min_lr: f64,
    },
    /// FFCV's linear ramp to the peak at `peak_epoch`, then linearly to 0 (per iteration).
    Ffcv { peak_epoch: f64 },
}

/// DeiT's augmentation and regularization knobs (all off for the CIFAR ConvNet presets).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// RandAugment rand-m9-mstd0.5-inc1.
    pub randaugment: bool,
    /// Color-jitter strength (0 = off).
    pub color_jitter: f64,
    /// Random-erasing probability (0 = off).
    pub random_erasing: f64,
    /// Mixup alpha (0 = off).
    pub mixup: f64,
    /// CutMix alpha (0 = off).
    pub cutmix: f64,
    /// Bicubic (DeiT) rather than bilinear (torchvision) resizing.
    pub bicubic: bool,
}

impl AugmentConfig {
    pub const NONE: AugmentConfig = AugmentConfig {
        randaugment: false,
        color_jitter: 0.0,
        random_erasing: 0.0,
        mixup: 0.0,
        cutmix: 0.0,
        bicubic: false,
    };

    pub fn mixes(&self) -> bool {
        self.mixup > 0.0 || self.cutmix > 0.0
    }
}

/// The data part of a [`TrainConfig`]: the source, the input resolution and the training
/// augmentation (the evaluation transform follows from them, see `EvalInput::of_run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainData {
    #[serde(rename = "data")]
    pub source: DataSource,
    /// Square input resolution.
    pub image_size: usize,
    pub augment: AugmentConfig,
}

/// Every setting of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The preset this configuration started from.
    pub recipe: String,
    /// Registry name of the model (`resnet20_cifar`, `resnet50`, `deit_small_patch16_224`, ...).
    pub model: String,
    /// What the run reads and how it augments it (serialized flat, as its fields always were).
    #[serde(flatten)]
    pub input: TrainData,
    pub epochs: usize,
    /// Global batch size (per process times processes).
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Base learning rate; scaled by `batch_size / lr_reference_batch` when that is set.
    pub lr: f64,
    /// The batch size `lr` refers to (DeiT: 512); `None` = use `lr` as is.
    pub lr_reference_batch: Option<usize>,
    pub weight_decay: f64,
    pub schedule: ScheduleConfig,
    /// Update the learning rate every iteration (else once per epoch).
    pub lr_per_iteration: bool,
    pub loss: LossKind,
    /// Alpha of MaxSup / LS, linear from `alpha_start` (first epoch) to `alpha_end` (last).
    pub alpha_start: f64,
    pub alpha_end: f64,
    /// Logit-penalty beta, focal gamma, Zipf-LS weight.
    pub lp_beta: f64,
    pub focal_gamma: f64,
    pub zipf_weight: f64,
    pub drop_path: f64,
    pub blurpool: bool,
    /// SyncBatchNorm: in a data-parallel run, BatchNorm normalises with the statistics of the
    /// whole global batch, not each process's part (in one process it is plain BatchNorm).
    /// Configs written before the field existed read as false.
    #[serde(default)]
    pub sync_bn: bool,
    /// Model EMA decay (`None` = no EMA).
    pub ema_decay: Option<f64>,
    /// Clip gradients to this global L2 norm (`None` = no clipping).
    pub clip_grad: Option<f64>,
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Activation dtype (`f32`, or `bf16` mixed precision on CUDA); configs written before the
    /// field existed read as f32.
    #[serde(default)]
    pub precision: crate::Precision,
    /// Train with channels-last (NHWC) activations (`maxsup_ops::to_channels_last` on each
    /// input batch; the ops keep the format). Same results, another memory order.
    #[serde(default)]
    pub channels_last: bool,
    /// Choose convolution algorithms by timing them (`maxsup_ops::set_cudnn_benchmark`, CUDA);
    /// configs written before the field existed read as off.
    #[serde(default)]
    pub cudnn_benchmark: bool,
    /// DeiT's attention forward and backward as tensor-core kernels (`maxsup_ops::set_fused_attention`,
    /// CUDA, bf16); configs written before the field existed read as off.
    #[serde(default)]
    pub fused_attention: bool,
    /// Where checkpoints, the resolved config and the JSON-lines log go.
    pub out_dir: PathBuf,
    /// Use only the first N training samples (quick runs and tests); `None` = all.
    pub train_subset: Option<usize>,
    /// Use only the first N evaluation samples; `None` = all.
    pub eval_subset: Option<usize>,
}

/// A preset: the base configuration with the preset's changes applied.
type Preset = fn(TrainConfig) -> TrainConfig;

/// The named presets, in the order `--list-recipes` shows them: each is the common base
/// ([`base_config`]) with what differs from it.
const PRESETS: [(&str, Preset); 7] = [
    ("cifar10-resnet20", cifar10_resnet20),
    ("cifar10-resnet18", cifar10_resnet18),
    ("cifar10-deit-tiny", cifar10_deit_tiny),
    ("cifar100-resnet18", cifar100_resnet18),
    ("resnet50-imagenet", resnet50_imagenet),
    ("resnet50-imagenet-step", resnet50_imagenet_step),
    ("deit-small-imagenet", deit_small_imagenet),
];

/// The names of the presets, for `--help`, `--list-recipes` and errors.
pub fn recipe_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(name, _)| *name)
}

fn cifar10() -> DataSource {
    DataSource::Cifar10 {
        dir: PathBuf::from("data/cifar-10-batches-bin"),
    }
}

/// The official zip cache under `data/ImageNet` at 224 px, no augmentation beyond the crop.
fn imagenet_input() -> TrainData {
    TrainData {
        source: DataSource::Zip {
            root: PathBuf::from("data/ImageNet"),
            cache: false,
        },
        image_size: 224,
        augment: AugmentConfig::NONE,
    }
}

/// SGD with momentum 0.9, no Nesterov (the paper's ResNet recipes).
fn sgd_without_nesterov() -> OptimizerConfig {
    OptimizerConfig::Sgd {
        momentum: 0.9,
        nesterov: false,
    }
}

fn adamw() -> OptimizerConfig {
    OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
}

/// What every preset starts from (run directory `runs/<name>`).
fn base_config(name: &str) -> TrainConfig {
    TrainConfig {
        recipe: name.to_string(),
        model: String::new(),
        input: TrainData {
            source: cifar10(),
            image_size: 32,
            augment: AugmentConfig::NONE,
        },
        epochs: 0,
        batch_size: 128,
        eval_batch_size: 500,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
        },
        lr: 0.1,
        lr_reference_batch: None,
        weight_decay: 5e-4,
        schedule: ScheduleConfig::Cosine {
            warmup_epochs: 0,
            warmup_lr: 0.0,
            min_lr: 0.0,
        },
        lr_per_iteration: true,
        loss: LossKind::Maxsup,
        alpha_start: 0.1,
        alpha_end: 0.2,
        lp_beta: 2e-3,
        focal_gamma: 2.0,
        zipf_weight: 0.1,
        drop_path: 0.0,
        blurpool: false,
        sync_bn: false,
        ema_decay: None,
        clip_grad: None,
        seed: 0,
        device: "cpu".into(),
        precision: crate::Precision::F32,
        channels_last: false,
        cudnn_benchmark: false,
        fused_attention: false,
        out_dir: PathBuf::from("runs").join(name),
        train_subset: None,
        eval_subset: None,
    }
}

/// Our fast CPU default: the He et al. CIFAR ResNet-20 with a short cosine schedule
/// (one-epoch warmup), sized to finish within an hour on two cores. 8 epochs at lr 0.2
/// were chosen with bench/torch_recipe_cifar.py (this recipe replicated in PyTorch on a
/// GPU): 86.0/86.3/86.6% test top-1 over three seeds, against 85.7/85.5% at lr 0.1 and
/// 84.6% with 7 epochs (docs/results.md). Longer runs: --epochs.
fn cifar10_resnet20(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "resnet20_cifar".into(),
        epochs: 8,
        lr: 0.2,
        schedule: ScheduleConfig::Cosine {
            warmup_epochs: 1,
            warmup_lr: 0.01,
            min_lr: 0.0,
        },
        ..base
    }
}

/// The GPU profile of the paper's Tables 1 and 2 (`scripts/gpu-tables.sh`): ResNet-18 with the
/// CIFAR stem, batch 512, SGD with Nesterov momentum, lr 0.4 (0.1 per 128 images, the linear
/// scaling rule) after a 2-epoch warm-up from 0.04, cosine to 0 per iteration, weight decay
/// 5e-4, pad-4 crop + flip, 15 epochs: sized so five losses train in one 10-minute command on an
/// H100/H200, where this network is known to pass 93% CIFAR-10 top-1 (published runs of it reach
/// ~95% in 30 epochs). On the CPU an epoch takes hours; use `cifar10-resnet20` there.
fn cifar10_resnet18(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "resnet18_cifar".into(),
        epochs: 15,
        batch_size: 512,
        eval_batch_size: 1000,
        lr: 0.4,
        schedule: ScheduleConfig::Cosine {
            warmup_epochs: 2,
            warmup_lr: 0.04,
            min_lr: 0.0,
        },
        ..base
    }
}

/// A small DeiT on CIFAR-10 (patch 4), DeiT's optimizer and schedule scaled down.
fn cifar10_deit_tiny(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "deit_tiny_patch4_32".into(),
        epochs: 30,
        optimizer: adamw(),
        lr: 5e-4,
        lr_reference_batch: Some(512),
        weight_decay: 0.05,
        schedule: ScheduleConfig::Cosine {
            warmup_epochs: 3,
            warmup_lr: 1e-6,
            min_lr: 1e-5,
        },
        lr_per_iteration: false,
        drop_path: 0.1,
        ..base
    }
}

/// Paper §4.2.1: 200 epochs, batch 128, lr 0.1 x0.2 at 60/120/160,
/// weight decay 5e-4 (momentum and augmentation not stated: SGD 0.9, pad-crop + flip).
fn cifar100_resnet18(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "resnet18_cifar".into(),
        epochs: 200,
        schedule: ScheduleConfig::MultiStep {
            milestones: vec![60, 120, 160],
            gamma: 0.2,
        },
        lr_per_iteration: false,
        optimizer: sgd_without_nesterov(),
        ..base
    }
}

/// The paper's ImageNet ResNet-50 recipe: 200 epochs, batch 2048,
/// lr 0.85 cosine, SGD 0.9, wd 1e-4 (none on BN/bias), BlurPool as in FFCV, and SyncBatchNorm
/// as the authors' Lightning runs (`sync_batchnorm=True`) when trained on several processes.
fn resnet50_imagenet(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "resnet50".into(),
        input: imagenet_input(),
        epochs: 200,
        batch_size: 2048,
        eval_batch_size: 256,
        optimizer: sgd_without_nesterov(),
        lr: 0.85,
        weight_decay: 1e-4,
        schedule: ScheduleConfig::Cosine {
            warmup_epochs: 0,
            warmup_lr: 0.0,
            min_lr: 0.0,
        },
        blurpool: true,
        sync_bn: true,
        ..base
    }
}

/// The torchvision V1 recipe of paper App. E: 90 epochs, batch 512, lr 0.1, x0.1 every 30.
fn resnet50_imagenet_step(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "resnet50".into(),
        input: imagenet_input(),
        epochs: 90,
        batch_size: 512,
        eval_batch_size: 256,
        optimizer: sgd_without_nesterov(),
        lr: 0.1,
        weight_decay: 1e-4,
        schedule: ScheduleConfig::Step {
            step_size: 30,
            gamma: 0.1,
        },
        lr_per_iteration: false,
        ..base
    }
}

/// DeiT-Small: 300 epochs, batch 1024, AdamW 5e-4 * B / 512, wd 0.05,
/// 5 warmup epochs from 1e-6, min lr 1e-5, drop path 0.1, RandAugment, color jitter 0.3,
/// random erasing 0.25, bicubic; Mixup/CutMix off as in the paper's tables (--mixup 0.8
/// --cutmix 1.0 turns them on), EMA 0.99996.
fn deit_small_imagenet(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        model: "deit_small_patch16_224".into(),
        input: TrainData {
            augment: AugmentConfig {
                randaugment: true,
                color_jitter: 0.3,
                random_erasing: 0.25,
                mixup: 0.0,
                cutmix: 0.0,
                bicubic: true,
            },
            ..imagenet_input()
        },
        epochs: 300,
        batch_size: 1024,
        eval_batch_size: 384,
        optimizer: adamw(),
        lr: 5e-4,
        lr_reference_batch: Some(512),
        weight_decay: 0.05,
        schedule: ScheduleConfig::Cosine {
            warmup_epochs: 5,
            warmup_lr: 1e-6,
            min_lr: 1e-5,
        },
        lr_per_iteration: false,
        drop_path: 0.1,
        ema_decay: Some(0.99996),
        ..base
    }
}

impl TrainConfig {
    /// The preset called `name`.
    pub fn preset(name: &str) -> Result<TrainConfig> {
        match PRESETS.iter().find(|(n, _)| *n == name) {
            Some((_, build)) => Ok(build(base_config(name))),
            None => bail!(
                "unknown recipe `{name}` (expected one of: {})",
                recipe_names().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The learning rate after the linear scaling rule.
    pub fn scaled_lr(&self) -> f64 {
        match self.lr_reference_batch {
            Some(reference) if reference > 0 => self.lr * self.batch_size as f64 / reference as f64,
            _ => self.lr,
        }
    }

    /// Checks the settings fit together before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("epochs must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            bail!("batch sizes must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("learning rate must be positive, got {}", self.lr);
        }
        for (name, alpha) in [
            ("mixup", self.input.augment.mixup),
            ("cutmix", self.input.augment.cutmix),
        ] {
            if !(alpha >= 0.0 && alpha.is_finite()) {
                bail!("{name} alpha must be >= 0 (0 turns it off), got {alpha}");
            }
        }
        for (name, n) in [
            ("train subset", self.train_subset),
            ("eval subset", self.eval_subset),
        ] {
            if n == Some(0) {
                bail!("{name} must be at least 1 sample (leave it out to use all)");
            }
        }
        if maxsup_models::model_family(&self.model).is_none() {
            bail!(
                "unknown model `{}` (--model); known models: {}",
                self.model,
                maxsup_models::model_names().join(", ")
            );
        }
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        let ranges: [(&str, f64, f64, f64, &str); 7] = [
            ("--weight-decay", self.weight_decay, 0.0, f64::MAX, ">= 0"),
            ("--alpha-start", self.alpha_start, 0.0, 1.0, "in [0, 1]"),
            ("--alpha-end", self.alpha_end, 0.0, 1.0, "in [0, 1]"),
            ("--lp-beta", self.lp_beta, 0.0, f64::MAX, ">= 0"),
            ("--focal-gamma", self.focal_gamma, 0.0, f64::MAX, ">= 0"),
            ("--zipf-weight", self.zipf_weight, 0.0, f64::MAX, ">= 0"),
            ("--drop-path", self.drop_path, 0.0, 0.999_999, "in [0, 1)"),
        ];
        for (flag, v, lo, hi, what) in ranges {
            if !in_range(v, lo, hi) {
                bail!("{flag} {v} must be {what}");
            }
        }
        if let Some(decay) = self.ema_decay {
            if !(decay > 0.0 && decay < 1.0) {
                bail!("--ema-decay {decay} must be in (0, 1) (0 turns EMA off)");
            }
        }
        if let Some(norm) = self.clip_grad {
            if !(norm > 0.0 && norm.is_finite()) {
                bail!("--clip-grad {norm} must be positive (0 turns clipping off)");
            }
        }
        if self.input.augment.mixes()
            && matches!(self.loss, LossKind::Ols | LossKind::Zipf | LossKind::Focal)
        {
            bail!(
                "loss `{}` is not defined for Mixup/CutMix soft targets; set --mixup 0 --cutmix 0",
                self.loss
            );
        }
        if self.loss == LossKind::Zipf
            && maxsup_models::model_info(&self.model).is_some_and(|i| !i.spatial_stage)
        {
            bail!(
                "Zipf-LS needs a spatial feature map; use it with a ResNet, not `{}`",
                self.model
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zipf-LS needs `dense_logits`, i.e. a model that declares a spatial last stage.
    #[test]
    fn zipf_ls_is_refused_for_a_model_without_a_spatial_stage() {
        let mut c = TrainConfig::preset("deit-small-imagenet").unwrap();
        c.loss = LossKind::Zipf;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("Zipf-LS needs a spatial feature map"), "{e}");
        c.model = "resnet50".into();
        c.drop_path = 0.0;
        c.validate().unwrap();
    }

    /// The data part is its own type in Rust but flat in the file, so run states and
    /// config.json files written before the split still read.
    #[test]
    fn the_data_part_serializes_flat_as_before() {
        let c = TrainConfig::preset("deit-small-imagenet").unwrap();
        let v = serde_json::to_value(&c).unwrap();
        for key in ["data", "image_size", "augment", "model", "epochs"] {
            assert!(v.get(key).is_some(), "no top-level `{key}` in {v}");
        }
        assert!(v.get("input").is_none() && v.get("source").is_none(), "{v}");
        assert_eq!(v["data"]["kind"], "zip");
        assert_eq!(v["augment"]["randaugment"], true);
    }

    #[test]
    fn every_preset_is_valid_and_round_trips_through_json() {
        for name in recipe_names() {
            let c = TrainConfig::preset(name).unwrap();
            c.validate().unwrap();
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), c);
        }
    }

    #[test]
    fn deit_lr_is_scaled_by_batch_over_512() {
        let c = TrainConfig::preset("deit-small-imagenet").unwrap();
        assert_eq!(c.scaled_lr(), 1e-3);
        assert_eq!(
            TrainConfig::preset("resnet50-imagenet")
                .unwrap()
                .scaled_lr(),
            0.85
        );
    }

    #[test]
    fn unknown_recipe_lists_the_known_ones() {
        let err = TrainConfig::preset("imagenet").unwrap_err().to_string();
        assert!(
            err.contains("cifar10-resnet20") && err.contains("deit-small-imagenet"),
            "{err}"
        );
    }

    #[test]
    fn incompatible_settings_are_rejected() {
        let mut c = TrainConfig::preset("deit-small-imagenet").unwrap();
        c.input.augment.mixup = 0.8;
        c.loss = LossKind::Ols;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("Mixup/CutMix"));
    }
}
