//! Cross entropy with hard and with soft targets.

use candle_core::{Result, Tensor, D};

use crate::fused::Terms;
use crate::log_softmax::log_softmax;
use crate::softmax_family::softmax_family_loss;
use crate::validate::{finite_loss, logits_2d, soft_targets};

/// Hard-label cross entropy `-log softmax(z)_y`, averaged over the batch.
///
/// `logits` is `[B, K]` (f32, f16, bf16 or f64; computed in f32 for the half types),
/// `targets` is `[B]` class indices (u32 or i64). Equal to PyTorch's `F.cross_entropy`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]], &Device::Cpu)?;
/// let targets = Tensor::new(&[0u32, 2], &Device::Cpu)?;
/// let loss = maxsup_loss::cross_entropy(&logits, &targets)?; // same as torch.nn.functional.cross_entropy
/// assert!((loss.to_scalar::<f32>()? - 0.17545).abs() < 1e-4);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let terms = Terms {
        ce: 1.0,
        ..Terms::default()
    };
    softmax_family_loss(logits, targets, terms, "cross_entropy")
}

/// Cross entropy against a target distribution per sample (Mixup/CutMix, timm's
/// `SoftTargetCrossEntropy`): `sum_k -s_k log softmax(z)_k`, averaged over the batch.
///
/// `soft_targets` is `[B, K]`; its rows are used as given (they are not renormalized).
pub fn soft_target_cross_entropy(logits: &Tensor, soft_targets: &Tensor) -> Result<Tensor> {
    const WHAT: &str = "soft_target_cross_entropy";
    let (b, k, z) = logits_2d(logits, WHAT)?;
    let s = self::soft_targets(soft_targets, b, k, z.dtype(), WHAT)?;
    let loss = per_sample_soft_ce(&log_softmax(&z)?, &s)?.mean_all()?;
    finite_loss(loss, logits, WHAT)
}

/// `-log p_y` per sample, `[B]`, from log-probabilities `[B, K]` and `[B, 1]` u32 indices.
pub(crate) fn per_sample_ce(log_probs: &Tensor, idx: &Tensor) -> Result<Tensor> {
    log_probs.gather(idx, 1)?.squeeze(1)?.neg()
}

/// `sum_k -s_k log p_k` per sample, `[B]`.
pub(crate) fn per_sample_soft_ce(log_probs: &Tensor, soft: &Tensor) -> Result<Tensor> {
    (log_probs * soft)?.sum(D::Minus1)?.neg()
}
