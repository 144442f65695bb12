//! BatchNorm2d with PyTorch semantics (train: biased batch variance for normalising, unbiased
//! for the running estimate, momentum 0.1; eval: running statistics).

use candle_core::{bail, DType, Result, Tensor, Var};

use crate::init::Init;
use crate::params::Scope;

/// torchvision's `nn.BatchNorm2d` defaults.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

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
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.weight.elem_count() {
            bail!("BatchNorm2d expects {} channels, got input {:?}", self.weight.elem_count(), x.dims());
        }
        let (mean, var) = if train {
            let count = n * h * w;
            if count < 2 {
                bail!("BatchNorm2d in train mode needs more than 1 value per channel, got input {:?}", x.dims());
            }
            // Statistics in f32 even for half inputs (candle's own BatchNorm breaks on that).
            let xf = x.to_dtype(DType::F32)?;
            let mean = xf.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let var = xf.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let mean = mean.flatten_all()?;
            let var = var.flatten_all()?;
            self.update_running(&mean.detach(), &var.detach(), count)?;
            (mean, var)
        } else {
            let rm = self.running_mean.as_tensor().detach().to_dtype(DType::F32)?;
            let rv = self.running_var.as_tensor().detach().to_dtype(DType::F32)?;
            (rm, rv)
        };
        // y = x * scale + shift with per-channel scale = w / sqrt(var + eps), shift = b - mean * scale.
        let scale = self.weight.to_dtype(DType::F32)?.div(&(var + EPS)?.sqrt()?)?;
        let shift = self.bias.to_dtype(DType::F32)?.sub(&mean.mul(&scale)?)?;
        let scale = scale.to_dtype(x.dtype())?.reshape((1, c, 1, 1))?;
        let shift = shift.to_dtype(x.dtype())?.reshape((1, c, 1, 1))?;
        x.broadcast_mul(&scale)?.broadcast_add(&shift)
    }

    fn update_running(&self, mean: &Tensor, biased_var: &Tensor, count: usize) -> Result<()> {
        let unbiased = (biased_var * (count as f64 / (count - 1) as f64))?;
        let dt = self.running_mean.dtype();
        let rm = self.running_mean.as_tensor().to_dtype(DType::F32)?;
        let rv = self.running_var.as_tensor().to_dtype(DType::F32)?;
        let new_mean = ((rm * (1.0 - MOMENTUM))? + (mean * MOMENTUM)?)?;
        let new_var = ((rv * (1.0 - MOMENTUM))? + (unbiased * MOMENTUM)?)?;
        self.running_mean.set(&new_mean.to_dtype(dt)?.detach())?;
        self.running_var.set(&new_var.to_dtype(dt)?.detach())
    }
}

