//! PyTorch `.pth` import via `candle_core::pickle` (zip-format `torch.save`, torch >= 1.6).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use super::state_dict::load_state_dict;
use crate::params::ParamStore;

/// Where checkpoints keep the state dict: at the top level (torchvision, `torch.save(model.
/// state_dict())`), or under one of these keys (timm/DeiT `model`, Lightning and many training
/// scripts `state_dict`).
const NESTED_KEYS: [&str; 4] = ["state_dict", "model", "model_state_dict", "module"];

/// Reads the tensors of a `.pth` checkpoint, finding the state dict at the top level or under
/// `state_dict` / `model` / `model_state_dict` / `module`. Names are returned as stored (a DDP
/// `module.` prefix is stripped later by [`load_state_dict`]).
pub fn read_pth_state_dict(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let top = candle_core::pickle::read_all_with_key(path, None)
        .with_context(|| format!("reading PyTorch checkpoint {} (only the zip format of torch >= 1.6 is supported; re-save legacy files with torch.save)", path.display()))?;
    if !top.is_empty() {
        return Ok(top);
    }
    for key in NESTED_KEYS {
        // A missing key is an error in candle; it just means "try the next layout".
        if let Ok(t) = candle_core::pickle::read_all_with_key(path, Some(key)) {
            if !t.is_empty() {
                return Ok(t);
            }
        }
    }
    bail!(
        "{}: found no tensors at the top level nor under any of the keys {:?}",
        path.display(),
        NESTED_KEYS
    )
}

/// Strict import of a `.pth` state dict into the model (see [`load_state_dict`]).
pub fn load_pth(params: &ParamStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = read_pth_state_dict(path)?;
    load_state_dict(params, tensors, &path.display().to_string())
}
