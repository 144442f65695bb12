//! Running trained models for analysis: load any checkpoint (our training checkpoints, plain
//! safetensors, PyTorch `.pth` in torchvision/timm layout), extract penultimate features and
//! logits to a feature file, and compute Grad-CAM maps.

mod extract;
mod gradcam;
mod load;

pub use extract::extract_features;
pub use gradcam::{grad_cam, GradCam};
pub use load::{load_model, load_model_weights, LoadedModel, WeightSet};
