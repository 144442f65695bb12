//! Focal loss (Lin et al. 2017) as used by the paper's long-tail experiments.

use candle_core::{Result, Tensor};

use crate::cross_entropy::per_sample_ce;
use crate::log_softmax::log_softmax;
use crate::validate::{class_indices, finite_loss, finite_param, logits_2d};

/// `-(1 - p_t)^gamma * log p_t`, averaged over the batch, with `p_t` (the probability of the
/// target) detached in the modulating factor, as the official long-tail code does: the factor
/// only reweights samples, it is not differentiated. No class-balancing alpha.
pub fn focal(logits: &Tensor, targets: &Tensor, gamma: f64) -> Result<Tensor> {
    const WHAT: &str = "focal";
    finite_param(gamma, "gamma", WHAT)?;
    if gamma < 0.0 {
        candle_core::bail!("{WHAT}: gamma must be >= 0, got {gamma}");
    }
    let (_, _, z) = logits_2d(logits, WHAT)?;
    let idx = class_indices(targets, &z, WHAT)?;
    let nll = per_sample_ce(&log_softmax(&z)?, &idx)?; // -log p_t
    let p_t = nll.neg()?.exp()?.detach();
    // (1 - p_t)^gamma; clamp at 0 so rounding (p_t marginally above 1) cannot make powf NaN.
    let weight = p_t.affine(-1.0, 1.0)?.clamp(0.0, 1.0)?.powf(gamma)?;
    finite_loss((weight * nll)?.mean_all()?, logits, WHAT)
}
