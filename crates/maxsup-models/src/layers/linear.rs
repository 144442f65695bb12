//! Fully connected layer `y = x W^T + b` over the last dimension (any leading dims).

use candle_core::{Result, Tensor};

use crate::init::Init;
use crate::params::Scope;

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `weight` [out, in] and `bias` [out] initialised as given.
    pub(crate) fn new(
        s: &Scope,
        inp: usize,
        out: usize,
        weight_init: Init,
        bias_init: Init,
    ) -> Result<Self> {
        Ok(Self {
            weight: s.param("weight", &[out, inp], weight_init)?,
            bias: s.param("bias", &[out], bias_init)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // One GEMM over the flattened leading dims, bias folded in (maxsup-ops).
        maxsup_ops::linear(
            x,
            &super::like(&self.weight, x)?,
            Some(&super::like(&self.bias, x)?),
        )
    }

    /// The weight matrix [out, in] (used to apply the classifier at every spatial location).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}
