//! Numerically stable log-softmax over the class dimension, built from differentiable ops.

use candle_core::{Result, Tensor, D};

/// `log softmax(z)` over the last dimension. The max is detached: it only shifts the values for
/// stability and cancels out of the result, so no gradient should flow through it.
pub(crate) fn log_softmax(z: &Tensor) -> Result<Tensor> {
    let shift = z.max_keepdim(D::Minus1)?.detach();
    let shifted = z.broadcast_sub(&shift)?;
    let log_norm = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_norm)
}
