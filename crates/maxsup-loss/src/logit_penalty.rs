//! Logit penalty (Dauphin & Cubuk 2021): cross entropy plus an L2 penalty on the logits.

use candle_core::{Result, Tensor, D};

use crate::cross_entropy::per_sample_ce;
use crate::log_softmax::log_softmax;
use crate::validate::{class_indices, finite_loss, finite_param, logits_2d};

/// `CE(z, y) + mean_b(beta * sum_k z_k^2 / 2)`, the official baseline's form (beta = 2e-3 in the
/// paper's configuration).
pub fn logit_penalty(logits: &Tensor, targets: &Tensor, beta: f64) -> Result<Tensor> {
    const WHAT: &str = "logit_penalty";
    finite_param(beta, "beta", WHAT)?;
    let (b, k, z) = logits_2d(logits, WHAT)?;
    let idx = class_indices(targets, b, k, WHAT)?;
    let ce = per_sample_ce(&log_softmax(&z)?, &idx)?;
    let penalty = (z.sqr()?.sum(D::Minus1)? * (beta / 2.0))?;
    finite_loss((ce + penalty)?.mean_all()?, logits, WHAT)
}
