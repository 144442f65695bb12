//! ResNets with torchvision's topology and state-dict names (v1.5: the stride sits on the 3x3
//! conv of a bottleneck), plus the CIFAR variants.

mod blocks;
mod config;
mod model;

pub use config::{BlockKind, ResNetConfig, Stem};
pub use model::ResNet;
