//! Gradient clipping by global L2 norm, `torch.nn.utils.clip_grad_norm_` semantics.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};

/// Clips the gradients of `vars` in `grads` to a global L2 norm of at most `max_norm` and returns the norm
/// before clipping (what PyTorch returns and what the engine should log).
///
/// As in PyTorch: `total = ||(||g_1||, ..., ||g_n||)||_2` over the vars that have a gradient (vars without one
/// are skipped), `coef = max_norm / (total + 1e-6)`, and every gradient is multiplied by `coef` when
/// `coef < 1`. A non-finite total is returned as is (PyTorch's default `error_if_nonfinite=False`); an infinite
/// one zeroes the gradients like PyTorch, a NaN one leaves them untouched (they already contain NaN). The norm
/// is accumulated in f64 and read back with a single device sync: [`clip_grad_norm_on_device`] clips the
/// same way without reading it.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    match clip_grad_norm_on_device(grads, vars, max_norm)? {
        Some(total) => total.to_scalar::<f64>(),
        None => Ok(0.0),
    }
}

/// [`clip_grad_norm`] without a read from the device, so a GPU step queues on without waiting
/// for its backward: the total norm stays a scalar f64 tensor on the gradients' device (`None`
/// when no var has a gradient) and the clipping factor `min(1, coef)` multiplies every gradient
/// there (a factor of exactly 1 leaves it unchanged, bit for bit).
pub fn clip_grad_norm_on_device(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<Option<Tensor>> {
    if !(max_norm.is_finite() && max_norm >= 0.0) {
        candle_core::bail!("clip_grad_norm: max_norm must be finite and >= 0, got {max_norm}");
    }
    let Some(total) = grad_norm_on_device(grads, vars)? else {
        return Ok(None);
    };
    let coef = Tensor::new(max_norm, total.device())?.div(&(&total + 1e-6)?)?;
    // `coef < 1` (false for NaN: a NaN norm leaves the gradients as they are) picks the factor;
    // not `minimum`, whose NaN differs between candle's CPU (NaN) and CUDA (fmin: 1) kernels.
    let factor = coef.lt(1.0)?.where_cond(&coef, &coef.ones_like()?)?;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            let clipped = g.broadcast_mul(&factor.to_dtype(g.dtype())?)?;
            grads.insert(var.as_tensor(), clipped);
        }
    }
    Ok(Some(total))
}

/// Global L2 norm of the gradients of `vars` (vars without a gradient are skipped; 0 when none has one).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    match grad_norm_on_device(grads, vars)? {
        Some(total) => total.to_scalar::<f64>(),
        None => Ok(0.0),
    }
}

/// [`grad_norm`] as a scalar f64 tensor on the gradients' device, read by no one (`None` when
/// no var has a gradient).
fn grad_norm_on_device(grads: &GradStore, vars: &[Var]) -> Result<Option<Tensor>> {
    let squares = vars
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| g.sqr()?.sum_all()?.to_dtype(DType::F64)?.reshape(1))
        .collect::<Result<Vec<Tensor>>>()?;
    if squares.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::cat(&squares, 0)?.sum_all()?.sqrt()?))
}
