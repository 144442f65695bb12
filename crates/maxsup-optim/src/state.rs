//! Serializable optimizer / EMA state, so a checkpoint can resume training bit-identically.
//!
//! Tensors (momentum buffers, Adam moments) are keyed `<param name>.<slot>`, mirroring PyTorch's per-parameter
//! state. Scalars (learning rate, per-parameter step counts) are kept as `f64`, exact for every integer count a
//! run can reach (< 2^53). [`OptimizerState::to_tensor_map`] folds both into one `HashMap<String, Tensor>` so
//! the whole state fits in a single safetensors file next to the model weights.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Result, Tensor};

/// Key prefix under which [`OptimizerState::to_tensor_map`] stores scalars (as shape-`[1]` F64 tensors).
pub const SCALAR_PREFIX: &str = "__scalar__.";

/// Exported optimizer state: per-parameter tensors plus a few scalars.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    /// `<param name>.<slot>` -> tensor (e.g. `layer.weight.momentum_buffer`, `layer.weight.exp_avg`).
    pub tensors: HashMap<String, Tensor>,
    /// Scalars such as `lr` and `<param name>.step`.
    pub scalars: BTreeMap<String, f64>,
}

impl OptimizerState {
    /// One flat tensor map (scalars become `__scalar__.<key>` F64 tensors of shape `[1]` on the CPU), ready for
    /// `candle_core::safetensors::save`.
    pub fn to_tensor_map(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = self.tensors.clone();
        for (k, v) in &self.scalars {
            out.insert(
                format!("{SCALAR_PREFIX}{k}"),
                Tensor::new(&[*v], &Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Inverse of [`Self::to_tensor_map`]. Errors name the offending key when a scalar entry is not a
    /// one-element tensor.
    pub fn from_tensor_map(map: HashMap<String, Tensor>) -> Result<Self> {
        let mut state = Self::default();
        for (k, t) in map {
            match k.strip_prefix(SCALAR_PREFIX) {
                Some(name) => {
                    if t.elem_count() != 1 {
                        candle_core::bail!(
                            "optimizer state scalar `{k}` has shape {:?}, expected one element",
                            t.dims()
                        );
                    }
                    let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
                    state.scalars.insert(name.to_string(), v);
                }
                None => {
                    state.tensors.insert(k, t);
                }
            }
        }
        Ok(state)
    }

    /// Reads scalar `key`, with an error naming it when absent.
    pub fn scalar(&self, key: &str) -> Result<f64> {
        self.scalars
            .get(key)
            .copied()
            .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks scalar `{key}`")))
    }
}

/// Splits a state key `<param name>.<slot>` into its parameter name, checking the slot is one of `slots`.
pub(crate) fn split_state_key<'a>(
    key: &'a str,
    slots: &[&'static str],
) -> Result<(&'a str, &'static str)> {
    for slot in slots {
        if let Some(name) = key.strip_suffix(slot).and_then(|k| k.strip_suffix('.')) {
            return Ok((name, slot));
        }
    }
    candle_core::bail!("optimizer state key `{key}` does not end in one of the slots {slots:?}")
}

/// Checks an imported state tensor against the parameter it belongs to and returns a private copy on the
/// parameter's device and dtype (a copy, so later writes to either side cannot alias).
pub(crate) fn adopt_state_tensor(key: &str, t: &Tensor, param: &Tensor) -> Result<Tensor> {
    if t.dims() != param.dims() {
        candle_core::bail!(
            "optimizer state `{key}` has shape {:?} but the parameter has shape {:?}",
            t.dims(),
            param.dims()
        );
    }
    t.to_device(param.device())?.to_dtype(param.dtype())?.copy()
}

/// `t` as optimizer state the multi-tensor kernels may update in place for `param`: itself when
/// contiguous on the parameter's device (state tensors are private copies: adopted, exported
/// and composed ones all are), else a contiguous copy there.
pub(crate) fn in_place_state(t: Tensor, param: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.device().same_device(param.device()) {
        Ok(t)
    } else {
        t.to_device(param.device())?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_map_round_trip_keeps_scalars_exact() {
        let mut s = OptimizerState::default();
        s.tensors.insert(
            "w.exp_avg".into(),
            Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap(),
        );
        s.scalars.insert("lr".into(), 0.1 + 0.2);
        s.scalars.insert("w.step".into(), 123_456_789.0);
        let back = OptimizerState::from_tensor_map(s.to_tensor_map().unwrap()).unwrap();
        assert_eq!(back.scalars, s.scalars);
        assert_eq!(
            back.tensors["w.exp_avg"].to_vec1::<f32>().unwrap(),
            [1., 2.]
        );
    }

    #[test]
    fn split_state_key_rejects_unknown_slots() {
        assert_eq!(
            split_state_key("a.b.exp_avg_sq", &["exp_avg", "exp_avg_sq"]).unwrap(),
            ("a.b", "exp_avg_sq")
        );
        assert!(split_state_key("a.b.velocity", &["exp_avg"]).is_err());
    }
}
