//! LayerNorm over the last dimension through `maxsup_ops::layer_norm` (differentiable).

use candle_core::{Result, Tensor};

use crate::init::Init;
use crate::params::Scope;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Weight 1, bias 0 (timm's init).
    pub(crate) fn new(s: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: s.param("weight", &[dim], Init::Const(1.0))?,
            bias: s.param("bias", &[dim], Init::Const(0.0))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        maxsup_ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }
}
