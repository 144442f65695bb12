//! Max Suppression (MaxSup), paper Eq. 8: `alpha * (z_max - mean_k z_k)` on the raw logits.

use candle_core::{Result, Tensor, D};

use crate::fused::Terms;
use crate::softmax_family::softmax_family_loss;
use crate::validate::{finite_loss, finite_param, logits_2d};

/// Cross entropy plus the MaxSup penalty: `CE(z, y) + alpha * mean_b(z_max - mean_k z_k)`.
///
/// This is the training loss of the paper (Algorithm 1): hard-label CE (no label smoothing)
/// plus the penalty on the top-1 logit, whatever the label. Per sample the penalty's gradient is
/// `+alpha (1 - 1/K)` on the argmax logit and `-alpha / K` on every other logit (paper Eq. 9); on
/// a misclassified sample the ground-truth logit is not penalized.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]], &Device::Cpu)?;
/// let targets = Tensor::new(&[0u32, 2], &Device::Cpu)?;
/// let ce = maxsup_loss::cross_entropy(&logits, &targets)?.to_scalar::<f32>()?;
/// let loss = maxsup_loss::maxsup(&logits, &targets, 0.1)?.to_scalar::<f32>()?;
/// // z_max - mean(z): 2.0 - 0.5 = 1.5 and 3.0 - 1.1 = 1.9, mean 1.7, times alpha 0.1.
/// assert!((loss - ce - 0.17).abs() < 1e-5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn maxsup(logits: &Tensor, targets: &Tensor, alpha: f64) -> Result<Tensor> {
    finite_param(alpha, "alpha", "maxsup")?;
    softmax_family_loss(
        logits,
        targets,
        Terms {
            ce: 1.0,
            maxsup: alpha,
            ..Terms::default()
        },
        "maxsup",
    )
}

/// The bare MaxSup term `alpha * mean_b(z_max - mean_k z_k)`, batch-averaged.
///
/// It needs no labels, so it can be added to any other loss, e.g. the soft-target cross entropy
/// of Mixup/CutMix, as the official DeiT code does.
///
/// Ties for the maximum: the gradient goes to one index, the first maximal one, as with
/// `torch.max` (candle's CPU `argmax` keeps the first).
pub fn maxsup_penalty(logits: &Tensor, alpha: f64) -> Result<Tensor> {
    const WHAT: &str = "maxsup_penalty";
    finite_param(alpha, "alpha", WHAT)?;
    let (_, _, z) = logits_2d(logits, WHAT)?;
    finite_loss((per_sample_gap(&z)?.mean_all()? * alpha)?, logits, WHAT)
}

/// `z_max - mean_k z_k` per sample, `[B]`. The max is taken with `gather` at the argmax rather
/// than with `max`, whose backward would split nothing and instead give the full gradient to
/// every tied maximum.
pub(crate) fn per_sample_gap(z: &Tensor) -> Result<Tensor> {
    let top = z.argmax_keepdim(D::Minus1)?;
    let z_max = z.gather(&top, 1)?.squeeze(1)?;
    z_max - z.mean(D::Minus1)?
}
