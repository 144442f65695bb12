//! BatchNorm2d with PyTorch semantics (train: biased batch variance for normalising, unbiased
//! for the running estimate, momentum 0.1; eval: running statistics).

use candle_core::{bail, Result, Tensor, Var};

use crate::init::Init;
use crate::params::Scope;

/// torchvision's `nn.BatchNorm2d` defaults.
pub(crate) const EPS: f64 = 1e-5;
pub(crate) const MOMENTUM: f64 = 0.1;

/// Names: `weight`, `bias` (trainable), `running_mean`, `running_var` (buffers), as in PyTorch.
/// `num_batches_tracked` is not kept: with a fixed momentum PyTorch never reads it.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm2d {
    /// Weight 1, bias 0, running mean 0, running var 1 (torchvision's init).
    pub(crate) fn new(s: &Scope, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: s.param("weight", &[channels], Init::Const(1.0))?,
            bias: s.param("bias", &[channels], Init::Const(0.0))?,
            running_mean: s.buffer("running_mean", &[channels], Init::Const(0.0))?,
            running_var: s.buffer("running_var", &[channels], Init::Const(1.0))?,
        })
    }

    /// `x`: [N, C, H, W]. In train mode this also updates the running statistics in place.
    /// Runs `maxsup_ops::batch_norm2d` (a fused custom op for f32 on the CPU).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x, train)?;
        maxsup_ops::batch_norm2d(
            x,
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            train,
            MOMENTUM,
            EPS,
        )
    }

    /// `relu(self.forward_t(x, train))`, fused into one op where the backend allows (the
    /// conv-BN-ReLU pattern of every ResNet).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x, train)?;
        maxsup_ops::batch_norm2d_relu(
            x,
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            train,
            MOMENTUM,
            EPS,
        )
    }

    /// `relu(self.forward_t(x, train) + residual)`, one op where the backend allows (the end of
    /// every ResNet block: on CUDA the BatchNorm output is never stored).
    pub fn forward_add_relu_t(&self, x: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x, train)?;
        maxsup_ops::batch_norm2d_add_relu(
            x,
            residual,
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            train,
            MOMENTUM,
            EPS,
        )
    }

    /// The layer as a BatchNorm of a ResNet block ([`maxsup_ops::residual_block`]).
    pub(crate) fn block_norm(&self) -> maxsup_ops::BlockNorm {
        maxsup_ops::BlockNorm {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            running_mean: self.running_mean.clone(),
            running_var: self.running_var.clone(),
        }
    }

    fn check_input(&self, x: &Tensor, train: bool) -> Result<()> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.weight.elem_count() {
            bail!(
                "BatchNorm2d expects {} channels, got input {:?}",
                self.weight.elem_count(),
                x.dims()
            );
        }
        if train && n * h * w < 2 {
            bail!(
                "BatchNorm2d in train mode needs more than 1 value per channel, got input {:?}",
                x.dims()
            );
        }
        Ok(())
    }
}
