//! safetensors checkpoints holding every parameter and buffer under its PyTorch name (the
//! format `safetensors.torch.save_file(model.state_dict())` produces, minus
//! `num_batches_tracked`).

use std::path::Path;

use anyhow::{Context, Result};

use super::state_dict::{load_state_dict, state_dict};
use crate::params::ParamStore;

pub fn save_safetensors(params: &ParamStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        state_dict(params).into_iter().collect();
    candle_core::safetensors::save(&tensors, path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Strict load (see [`load_state_dict`]).
pub fn load_safetensors(params: &ParamStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = candle_core::safetensors::load(path, params.device())
        .with_context(|| format!("reading safetensors file {}", path.display()))?;
    load_state_dict(
        params,
        tensors.into_iter().collect(),
        &path.display().to_string(),
    )
}
