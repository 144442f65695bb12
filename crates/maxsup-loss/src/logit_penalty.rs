//! Logit penalty (Dauphin & Cubuk 2021): cross entropy plus an L2 penalty on the logits.

use candle_core::{Result, Tensor};

use crate::fused::Terms;
use crate::softmax_family::softmax_family_loss;
use crate::validate::finite_param;

/// `CE(z, y) + mean_b(beta * sum_k z_k^2 / 2)`, the official baseline's form (beta = 2e-3 in the
/// paper's configuration).
pub fn logit_penalty(logits: &Tensor, targets: &Tensor, beta: f64) -> Result<Tensor> {
    finite_param(beta, "beta", "logit_penalty")?;
    softmax_family_loss(
        logits,
        targets,
        Terms {
            ce: 1.0,
            lp: beta,
            ..Terms::default()
        },
        "logit_penalty",
    )
}
