//! Running trained models for analysis: load any checkpoint (our training checkpoints, plain
//! safetensors, PyTorch `.pth` in torchvision/timm layout), extract penultimate features and
//! logits to a feature file, compute Grad-CAM maps, and measure the paper's tables.

mod extract;
mod gradcam;
mod load;
pub mod tables;

pub use extract::extract_features;
pub use gradcam::{grad_cam, GradCam};
pub use load::{load_model, load_model_weights, LoadedModel, WeightSet};
