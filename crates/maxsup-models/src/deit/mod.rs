//! DeiT (ViT with CLS-token pooling) with timm's state-dict names.

mod block;
mod config;
mod model;

pub use config::DeiTConfig;
pub use model::DeiT;
