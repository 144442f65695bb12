//! Optimizer updates of many tensors in one kernel launch (per 32 tensors), in place: SGD with
//! momentum, AdamW and the weight EMA, on CUDA f32 tensors.
//!
//! Composed from candle ops, an SGD step is seven or eight element-wise kernels per parameter,
//! each allocating its result, and `Var::set` copies it back: ~1,300 launches for ResNet-50's 161
//! parameters, ~1,500 for an AdamW step of DeiT-S, each costing the host a few microseconds of
//! candle bookkeeping. Here each step is a handful of launches that read and write every array
//! once, as PyTorch's `foreach` optimizers do. The arithmetic is the composed update's, operation
//! by operation, without FMA contraction, so the GPU computes the same floats as the CPU
//! optimizer (`crates/maxsup-optim`; the kernel emulator's tests check it to the bit).
//!
//! The updates write through the tensors' storage while candle holds it for reading: the same
//! in-place semantics as `Var::set`, ordered with every other kernel on the device's one stream.
//! Two written buffers that overlap are an error, not a race.

#[doc(hidden)]
pub mod table;

use candle_core::{Result, Tensor};
pub use table::Update;

/// SGD's step (`torch.optim.SGD` with momentum > 0, dampening 0), f64 as the optimizer holds
/// them; the kernel applies them in f32 as candle's `affine` would.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdMomentum {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

/// One parameter of an SGD step: updated in place with its momentum buffer (zeros before the
/// first step: the update then sets it to the gradient, as PyTorch does).
#[derive(Clone, Copy, Debug)]
pub struct SgdTensors<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub momentum_buffer: &'a Tensor,
    pub weight_decay: f64,
}

/// AdamW's step (`torch.optim.AdamW`, amsgrad off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// One parameter of an AdamW step, with its moments (zeros before the first step) and its own
/// step count after this update (`1` on the first), which sets its bias corrections.
#[derive(Clone, Copy, Debug)]
pub struct AdamWTensors<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub exp_avg: &'a Tensor,
    pub exp_avg_sq: &'a Tensor,
    pub weight_decay: f64,
    pub step: u64,
}

/// Whether the multi-tensor updates apply to `param`: an f32 tensor on a CUDA device, laid out
/// contiguously (the optimizers compose candle ops otherwise).
pub fn applies(param: &Tensor) -> bool {
    param.device().is_cuda() && param.dtype() == candle_core::DType::F32 && param.is_contiguous()
}

/// One tensor of an update: the tensor written (EMA: read), the gradient, up to two state
/// tensors, and its per-tensor scalars.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct Slot<'a> {
    pub param: &'a Tensor,
    pub grad: Option<&'a Tensor>,
    pub state: [Option<&'a Tensor>; 2],
    pub scalars: [f32; 3],
}

/// One SGD step with momentum over `tensors` (each updated in place).
pub fn sgd_momentum_step(step: SgdMomentum, tensors: &[SgdTensors]) -> Result<()> {
    if step.momentum <= 0.0 {
        candle_core::bail!(
            "multi-tensor SGD: momentum must be > 0, got {}",
            step.momentum
        );
    }
    let slots: Vec<Slot> = tensors
        .iter()
        .map(|t| Slot {
            param: t.param,
            grad: Some(t.grad),
            state: [Some(t.momentum_buffer), None],
            scalars: table::sgd_scalars(t.weight_decay),
        })
        .collect();
    run("multi-tensor SGD", Update::sgd(step), &slots)
}

/// One AdamW step over `tensors` (parameters and moments updated in place).
pub fn adamw_step(step: AdamWStep, tensors: &[AdamWTensors]) -> Result<()> {
    let mut slots = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.step == 0 {
            candle_core::bail!("multi-tensor AdamW: step counts start at 1");
        }
        slots.push(Slot {
            param: t.param,
            grad: Some(t.grad),
            state: [Some(t.exp_avg), Some(t.exp_avg_sq)],
            scalars: table::adamw_scalars(step, t.weight_decay, t.step),
        });
    }
    run("multi-tensor AdamW", Update::adamw(step), &slots)
}

/// `average = decay * average + (1 - decay) * model` for each `(average, model)` pair, the
/// averages in place (timm's `ModelEmaV2`).
pub fn ema_step(decay: f64, pairs: &[(&Tensor, &Tensor)]) -> Result<()> {
    let slots: Vec<Slot> = pairs
        .iter()
        .map(|&(average, model)| Slot {
            param: model,
            grad: None,
            state: [Some(average), None],
            scalars: [0.0; 3],
        })
        .collect();
    run("multi-tensor EMA", Update::ema(decay), &slots)
}

fn run(what: &str, update: Update, slots: &[Slot]) -> Result<()> {
    if slots.is_empty() {
        return Ok(());
    }
    if let Some(s) = slots.iter().find(|s| !applies(s.param)) {
        candle_core::bail!(
            "{what}: needs contiguous f32 tensors on a CUDA device, got {:?} {:?} on {:?}",
            s.param.dtype(),
            s.param.dims(),
            s.param.device().location()
        );
    }
    #[cfg(feature = "cuda")]
    {
        crate::cuda::multi_tensor(what, update, slots)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = update;
        candle_core::bail!("{what}: this build has no CUDA support")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// CPU tensors are not the multi-tensor kernels' (the optimizers keep their CPU passes):
    /// `applies` says so, and a call says what it needs instead of touching anything.
    #[test]
    fn cpu_tensors_are_refused_with_a_clear_error() -> Result<()> {
        let p = Tensor::ones(8, DType::F32, &Device::Cpu)?;
        let g = p.ones_like()?;
        let buf = p.zeros_like()?;
        assert!(!applies(&p));
        let step = SgdMomentum {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
        };
        let tensors = [SgdTensors {
            param: &p,
            grad: &g,
            momentum_buffer: &buf,
            weight_decay: 0.0,
        }];
        let err = sgd_momentum_step(step, &tensors).unwrap_err().to_string();
        assert!(
            err.contains("multi-tensor SGD") && err.contains("CUDA"),
            "{err}"
        );
        assert_eq!(p.to_vec1::<f32>()?, vec![1.0; 8]);
        let zero_momentum = SgdMomentum {
            momentum: 0.0,
            ..step
        };
        assert!(sgd_momentum_step(zero_momentum, &tensors).is_err());
        // Nothing to do is not an error.
        sgd_momentum_step(step, &[])?;
        Ok(())
    }
}
