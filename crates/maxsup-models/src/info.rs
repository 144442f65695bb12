//! What a model declares about itself, so that training, the optimizer's weight-decay groups,
//! feature extraction and Grad-CAM read it instead of guessing from names (timm's
//! `pretrained_cfg`, `no_weight_decay()` and `get_classifier()`).

use crate::registry::ModelFamily;

/// How the model's input images are normalised (the statistics themselves live with the data
/// transforms, in `maxsup-data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// ImageNet mean/std (torchvision and timm weights).
    ImageNet,
    /// CIFAR-10 mean/std (the 32x32 models).
    Cifar10,
}

/// The resampling filter of the evaluation resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeFilter {
    /// PIL bilinear (torchvision's ResNet evaluation).
    Bilinear,
    /// PIL bicubic (timm's DeiT evaluation).
    Bicubic,
}

/// The evaluation input a model expects (timm's data config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataConfig {
    /// Square input side in pixels.
    pub input_size: usize,
    pub normalization: Normalization,
    /// Centre-crop fraction of the evaluation resize (`resize = input_size / crop_pct`).
    pub crop_pct: f64,
    pub interpolation: ResizeFilter,
}

impl DataConfig {
    /// torchvision's ResNet evaluation: 224 px, resize 256 bilinear, centre crop.
    pub const IMAGENET_RESNET: DataConfig = DataConfig {
        input_size: 224,
        normalization: Normalization::ImageNet,
        crop_pct: 0.875,
        interpolation: ResizeFilter::Bilinear,
    };

    /// timm's DeiT evaluation at `input_size` px: bicubic resize to `input_size / 0.875`,
    /// centre crop.
    pub const fn imagenet_deit(input_size: usize) -> DataConfig {
        DataConfig {
            input_size,
            normalization: Normalization::ImageNet,
            crop_pct: 0.875,
            interpolation: ResizeFilter::Bicubic,
        }
    }

    /// The 32x32 CIFAR models: the image as it is, CIFAR-10 statistics.
    pub const fn cifar(input_size: usize) -> DataConfig {
        DataConfig {
            input_size,
            normalization: Normalization::Cifar10,
            crop_pct: 1.0,
            interpolation: ResizeFilter::Bilinear,
        }
    }
}

/// The facts about a model that code outside it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub family: ModelFamily,
    /// Name prefix of the classifier layer (`fc` for ResNets, `head` for DeiTs): its weight is
    /// `<classifier>.weight`, `[classes, features]`.
    pub classifier: &'static str,
    /// Parameters exempt from weight decay beyond the 1-D ones (norms and biases), matched as a
    /// full name or a trailing dotted component: DeiT's `pos_embed` and `cls_token`.
    pub no_weight_decay: &'static [&'static str],
    /// Whether `forward_stage` returns a spatial feature map `[B, C, h, w]` (Grad-CAM, Zipf's
    /// label smoothing and `dense_logits` need one).
    pub spatial_stage: bool,
    pub data: DataConfig,
}

impl ModelInfo {
    /// A torchvision-style ResNet taking `data`.
    pub fn resnet(data: DataConfig) -> Self {
        Self {
            family: ModelFamily::ResNet,
            classifier: "fc",
            no_weight_decay: &[],
            spatial_stage: true,
            data,
        }
    }

    /// A timm DeiT taking `data`.
    pub fn deit(data: DataConfig) -> Self {
        Self {
            family: ModelFamily::DeiT,
            classifier: "head",
            no_weight_decay: &["pos_embed", "cls_token"],
            spatial_stage: false,
            data,
        }
    }

    /// The state-dict name of the classifier weight.
    pub fn classifier_weight(&self) -> String {
        format!("{}.weight", self.classifier)
    }
}
