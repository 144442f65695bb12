//! Matching a set of named tensors against a model's parameters, strictly.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use anyhow::{Context, Result};
use candle_core::Tensor;

use crate::params::ParamStore;

/// Why a set of tensors could not be loaded into a model. Every list names tensors with shapes,
/// so a wrong architecture, class count or naming scheme is obvious from the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct StateDictMismatch {
    /// Where the tensors came from (file path).
    pub origin: String,
    /// In the model, not in the file: (name, model shape).
    pub missing: Vec<(String, Vec<usize>)>,
    /// In the file, not in the model: (name, file shape).
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// In both with different shapes: (name, model shape, file shape).
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl fmt::Display for StateDictMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "weights in {} do not match the model", self.origin)?;
        if !self.missing.is_empty() {
            write!(
                f,
                "\n  missing ({}, in the model but not in the file):",
                self.missing.len()
            )?;
            for (n, s) in &self.missing {
                write!(f, "\n    {n} {s:?}")?;
            }
        }
        if !self.unexpected.is_empty() {
            write!(
                f,
                "\n  unexpected ({}, in the file but not in the model):",
                self.unexpected.len()
            )?;
            for (n, s) in &self.unexpected {
                write!(f, "\n    {n} {s:?}")?;
            }
        }
        if !self.wrong_shape.is_empty() {
            write!(f, "\n  wrong shape ({}):", self.wrong_shape.len())?;
            for (n, m, s) in &self.wrong_shape {
                write!(f, "\n    {n}: model {m:?}, file {s:?}")?;
            }
        }
        Ok(())
    }
}

/// The model's tensors (parameters and buffers) by state-dict name, in state-dict order.
pub fn state_dict(params: &ParamStore) -> Vec<(String, Tensor)> {
    params
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.var.as_tensor().clone()))
        .collect()
}

/// PyTorch's BatchNorm step counter; unused with a fixed momentum, so it is neither kept nor
/// required.
fn is_ignored(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Copies `tensors` into the model, all or nothing: every model tensor must be present with
/// its shape and nothing else may be there (`num_batches_tracked` is ignored; a DDP `module.`
/// prefix on every name is stripped). Values are converted to the model's dtype and device.
/// On mismatch the error is a [`StateDictMismatch`] (downcast it to inspect the lists).
pub fn load_state_dict(
    params: &ParamStore,
    tensors: Vec<(String, Tensor)>,
    origin: &str,
) -> Result<()> {
    let strip = !tensors.is_empty() && tensors.iter().all(|(n, _)| n.starts_with("module."));
    let file: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(n, _)| !is_ignored(n))
        .map(|(n, t)| {
            (
                if strip {
                    n["module.".len()..].to_string()
                } else {
                    n
                },
                t,
            )
        })
        .collect();
    let mut mismatch = StateDictMismatch {
        origin: origin.to_string(),
        missing: vec![],
        unexpected: vec![],
        wrong_shape: vec![],
    };
    let mut known = HashSet::new();
    for e in params.entries() {
        known.insert(e.name.as_str());
        match file.get(&e.name) {
            None => mismatch
                .missing
                .push((e.name.clone(), e.var.dims().to_vec())),
            Some(t) if t.dims() != e.var.dims() => mismatch.wrong_shape.push((
                e.name.clone(),
                e.var.dims().to_vec(),
                t.dims().to_vec(),
            )),
            Some(_) => {}
        }
    }
    for (n, t) in &file {
        if !known.contains(n.as_str()) {
            mismatch.unexpected.push((n.clone(), t.dims().to_vec()));
        }
    }
    if !(mismatch.missing.is_empty()
        && mismatch.unexpected.is_empty()
        && mismatch.wrong_shape.is_empty())
    {
        return Err(mismatch.into());
    }
    for e in params.entries() {
        check_weight_values(&e.name, &file[&e.name], e.var.dtype(), origin)?;
    }
    for e in params.entries() {
        let t = &file[&e.name];
        let value = t.to_device(params.device())?.to_dtype(params.dtype())?;
        e.var
            .set(&value)
            .with_context(|| format!("setting `{}` from {origin}", e.name))?;
    }
    Ok(())
}

/// A float tensor given as integers is a different tensor (not a conversion to make silently),
/// and a NaN or infinite weight makes every output non-finite: both are refused by name.
pub fn check_weight_values(
    name: &str,
    t: &Tensor,
    target: candle_core::DType,
    origin: &str,
) -> Result<()> {
    if !target.is_float() || !t.dtype().is_float() {
        if target.is_float() {
            anyhow::bail!(
                "{origin}: tensor `{name}` has dtype {:?}; the model expects floating-point weights",
                t.dtype()
            );
        }
        return Ok(());
    }
    // 0 * x is 0 for finite x and NaN otherwise, so one reduction finds any bad value.
    let t64 = t.to_dtype(candle_core::DType::F64)?;
    let probe = t64.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f64>()?;
    if probe != 0.0 {
        let values = t64.flatten_all()?.to_vec1::<f64>()?;
        let at = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        anyhow::bail!(
            "{origin}: tensor `{name}` has a non-finite value ({}) at flat index {at}",
            values[at]
        );
    }
    Ok(())
}
