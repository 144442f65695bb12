//! Gradient clipping by global L2 norm, `torch.nn.utils.clip_grad_norm_` semantics.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};

/// Clips the gradients of `vars` in `grads` to a global L2 norm of at most `max_norm` and returns the norm
/// before clipping (what PyTorch returns and what the engine should log).
///
/// As in PyTorch: `total = ||(||g_1||, ..., ||g_n||)||_2` over the vars that have a gradient (vars without one
/// are skipped), `coef = max_norm / (total + 1e-6)`, and every gradient is multiplied by `coef` when
/// `coef < 1`. A non-finite total is returned as is (PyTorch's default `error_if_nonfinite=False`); an infinite
/// one zeroes the gradients like PyTorch, a NaN one leaves them untouched (they already contain NaN). The norm
/// is accumulated in f64 and read back with a single device sync.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm >= 0.0) {
        candle_core::bail!("clip_grad_norm: max_norm must be finite and >= 0, got {max_norm}");
    }
    let total = grad_norm(grads, vars)?;
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let clipped = g.affine(coef, 0.0)?;
                grads.insert(var.as_tensor(), clipped);
            }
        }
    }
    Ok(total)
}

/// Global L2 norm of the gradients of `vars` (vars without a gradient are skipped; 0 when none has one).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let squares = vars
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| g.sqr()?.sum_all()?.to_dtype(DType::F64)?.reshape(1))
        .collect::<Result<Vec<Tensor>>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let sum: f64 = Tensor::cat(&squares, 0)?.sum_all()?.to_scalar()?;
    Ok(sum.sqrt())
}
