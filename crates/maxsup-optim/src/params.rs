//! Flattened view of parameter groups shared by the optimizers: one entry per parameter with its group's
//! weight decay, plus a name index used when importing state.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Result, Tensor, Var};

use crate::param_groups::ParamGroup;

/// One optimized parameter and the weight decay of the group it came from.
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub name: String,
    pub var: Var,
    pub weight_decay: f64,
}

/// Parameters of all groups, in order, with unique names.
#[derive(Clone, Debug)]
pub(crate) struct ParamTable {
    pub params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl ParamTable {
    /// `(index, gradient)` of every parameter that received a gradient, in table order; the
    /// others are skipped (PyTorch's `p.grad is None`).
    pub fn gradients(&self, grads: &GradStore) -> Vec<(usize, Tensor)> {
        self.params
            .iter()
            .enumerate()
            .filter_map(|(i, p)| grads.get(p.var.as_tensor()).map(|g| (i, g.clone())))
            .collect()
    }

    /// Flattens `groups`; a name occurring twice is an error because optimizer state is keyed by name.
    pub fn new(groups: Vec<ParamGroup>) -> Result<Self> {
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for group in groups {
            if !group.weight_decay.is_finite() || group.weight_decay < 0.0 {
                candle_core::bail!(
                    "weight decay must be finite and >= 0, got {}",
                    group.weight_decay
                );
            }
            for (name, var) in group.params {
                if !var.dtype().is_float() {
                    candle_core::bail!(
                        "parameter `{name}` has dtype {:?}; only float parameters can be optimized",
                        var.dtype()
                    );
                }
                if index.insert(name.clone(), params.len()).is_some() {
                    candle_core::bail!(
                        "parameter `{name}` appears in more than one place; names must be unique"
                    );
                }
                params.push(Param {
                    name,
                    var,
                    weight_decay: group.weight_decay,
                });
            }
        }
        Ok(Self { params, index })
    }

    /// Index of parameter `name`, or an error naming it (used for imported state keys).
    pub fn position(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "optimizer state refers to unknown parameter `{name}`"
            ))
        })
    }

    /// Whether parameter `i` with gradient `grad` can take the multi-tensor CUDA update (a
    /// contiguous f32 CUDA parameter with a gradient of its dtype on its device).
    pub fn multi_tensor_eligible(&self, i: usize, grad: &Tensor) -> bool {
        let p = self.params[i].var.as_tensor();
        maxsup_ops::multi_tensor::applies(p)
            && grad.dtype() == p.dtype()
            && grad.device().same_device(p.device())
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|p| p.var.clone()).collect()
    }
}
