//! ResNet and DeiT models that train in candle and load torchvision/timm weights.
//!
//! * [`ImageClassifier`]: the single, object-safe (`Send + Sync`) interface: `info` (the
//!   model's declared [`ModelInfo`]: family, classifier, no-weight-decay set, spatial stage,
//!   evaluation [`DataConfig`]), `forward_t`,
//!   `forward_features`, `forward_head`, the last-stage split `forward_stage` /
//!   `forward_from_stage` (Zipf-LS), `forward_cam` (Grad-CAM's target: ResNets' last feature
//!   map, DeiTs' last-block `norm1`), `dense_logits` (ResNets), `num_classes`,
//!   `num_features`, and `params()` with every tensor under its PyTorch state-dict name, marked
//!   trainable or buffer.
//! * [`create_model`] / [`model_names`]: build by timm-style name (`resnet50`, `resnet20_cifar`,
//!   `deit_small_patch16_224`, `deit_tiny_patch4_32`, ...) with [`ModelOptions`].
//! * Weight I/O: [`save_safetensors`], [`load_safetensors`], [`load_pth`] (torchvision state
//!   dicts, timm `{"model": ...}`, `{"state_dict": ...}`, DDP `module.` prefixes); strict, with a
//!   [`StateDictMismatch`] error listing missing, unexpected and wrongly shaped tensors.
//!
//! Every layer is differentiable (convolutions, pooling, LayerNorm and softmax go through
//! `maxsup-ops`), BatchNorm follows PyTorch's train/eval semantics (running statistics are
//! updated in place during `forward_t(x, true)`), and outputs match torchvision/timm to 1e-4
//! (tests/parity.rs). Models are float32.

mod classifier;
pub mod deit;
mod info;
pub mod init;
mod io;
pub mod layers;
mod params;
mod registry;
pub mod resnet;
mod summary;

pub use classifier::ImageClassifier;
pub use info::{DataConfig, ModelInfo, Normalization, ResizeFilter};
pub use io::{
    check_weight_values, load_pth, load_safetensors, load_state_dict, read_pth_state_dict,
    save_safetensors, state_dict, StateDictMismatch,
};
pub use layers::seed_stochastic_layers;
pub use params::{ParamEntry, ParamKind, ParamStore};
pub use registry::{
    create_model, model_family, model_info, model_names, model_summary, ModelFamily, ModelOptions,
};
pub use summary::{module_summary, ModuleSummary};
