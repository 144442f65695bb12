//! The fused softmax-family loss on CUDA: the kernels behind `maxsup-loss`'s fused op (whose CPU
//! kernel lives there, in `fused.rs`), for CE, label smoothing, MaxSup and the logit penalty.
//!
//! Composed from candle ops, these losses are ~20 kernels over the `[B, K]` logits each way
//! (log-softmax, gather, mean, max, gather, their backward, the sums); fused, the forward is two
//! launches (one block per row, then a fixed-order batch mean) and the gradient one, all with
//! f64 statistics as the CPU kernel, so both devices give the same loss to f32 rounding.

/// Weights of the per-sample loss `ce * (-log p_y) + uniform * (-mean_k log p_k)
/// + maxsup * (z_max - mean_k z_k) + lp / 2 * sum_k z_k^2` (`LossTerms` in ops.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossTerms {
    pub ce: f64,
    pub uniform: f64,
    pub maxsup: f64,
    pub lp: f64,
}

#[cfg(feature = "cuda")]
pub use crate::cuda::loss::{softmax_loss_forward, softmax_loss_gradient};
