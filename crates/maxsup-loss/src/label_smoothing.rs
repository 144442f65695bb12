//! Label smoothing and its decomposition into a regularization and an error-amplification term
//! (paper Lemma 3.2, Theorem 3.3, Corollary 3.4).

use candle_core::{Result, Tensor, D};

use crate::fused::Terms;
use crate::softmax_family::softmax_family_loss;
use crate::validate::{class_indices, finite_loss, finite_param, logits_2d};

/// Cross entropy against the smoothed target `(1 - alpha) * onehot(y) + alpha / K`, averaged over
/// the batch; identical to PyTorch's `F.cross_entropy(logits, y, label_smoothing=alpha)`.
///
/// `alpha` must lie in `[0, 1]`.
pub fn label_smoothing(logits: &Tensor, targets: &Tensor, alpha: f64) -> Result<Tensor> {
    check_alpha(alpha, "label_smoothing")?;
    let terms = Terms {
        ce: 1.0 - alpha,
        uniform: alpha,
        ..Terms::default()
    };
    softmax_family_loss(logits, targets, terms, "label_smoothing")
}

/// The two parts of the label-smoothing term `L_LS = alpha (z_gt - mean_k z_k)` (paper Eq. 5),
/// batch-averaged scalar tensors. Their sum is the LS term, and
/// `label_smoothing = cross_entropy + regularization + error_amplification`.
#[derive(Debug, Clone)]
pub struct LsDecomposition {
    /// `(alpha / K) * sum_{z_m < z_gt} (z_gt - z_m)`: pulls the target logit towards the
    /// smaller ones; `>= 0`.
    pub regularization: Tensor,
    /// `(alpha / K) * sum_{z_n > z_gt} (z_gt - z_n)`: `<= 0`, zero when the prediction is correct;
    /// minimizing it widens the gap to the wrongly preferred classes.
    pub error_amplification: Tensor,
}

/// Splits the label-smoothing term into its regularization and error-amplification parts, in
/// the `alpha / K` form of paper Eq. 5, for monitoring during training.
///
/// This is the formulation the paper states, computed per sample on `[B, K]` (the official
/// monitoring code broadcasts `z_gt` to `[B, B, K]` by mistake; this does not).
pub fn ls_decomposition(logits: &Tensor, targets: &Tensor, alpha: f64) -> Result<LsDecomposition> {
    const WHAT: &str = "ls_decomposition";
    check_alpha(alpha, WHAT)?;
    let (_, k, z) = logits_2d(logits, WHAT)?;
    let idx = class_indices(targets, &z, WHAT)?;
    let z_gt = z.gather(&idx, 1)?;
    let gap = z_gt.broadcast_sub(&z)?; // z_gt - z_k
    let scale = alpha / k as f64;
    let regularization = (gap.relu()?.sum(D::Minus1)?.mean_all()? * scale)?;
    let error_amplification = (gap.neg()?.relu()?.sum(D::Minus1)?.mean_all()? * (-scale))?;
    Ok(LsDecomposition {
        regularization: finite_loss(regularization, logits, WHAT)?,
        error_amplification,
    })
}

fn check_alpha(alpha: f64, what: &str) -> Result<()> {
    finite_param(alpha, "alpha", what)?;
    if !(0.0..=1.0).contains(&alpha) {
        candle_core::bail!("{what}: alpha must be in [0, 1], got {alpha}");
    }
    Ok(())
}
