//! Zipf's Label Smoothing (Liang et al., ECCV 2022), following the official algorithm.

use candle_core::{bail, Result, Tensor, D};

use crate::cross_entropy::per_sample_ce;
use crate::log_softmax::log_softmax;
use crate::validate::{class_index_values, finite_loss, finite_param, index_tensor, logits_2d};

/// Zipf's label smoothing: `CE(z, y) + weight * KL(p_zipf || softmax(z_{-y}))`.
///
/// The soft target comes from the model itself: the classifier is applied at
/// every location of the last feature map (the *dense* logits `[B, K, H, W]`), every location
/// votes for its argmax class, classes are ranked by votes (ties share the minimum rank, as
/// `scipy.stats.rankdata(method="min")`), and class `k` gets mass `rank_k^-power`. The target class
/// is removed and the rest renormalized; the KL divergence is taken against the softmax over the
/// `K - 1` non-target logits. The votes are an argmax, so the target distribution carries no
/// gradient; the gradient flows through the non-target logits.
///
/// Official hyper-parameters: weight 0.1 (ImageNet, CIFAR-100), 1.0 (TinyImageNet), power 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZipfLabelSmoothing {
    /// `loss_lambda` of the official code.
    pub weight: f64,
    /// Exponent of the Zipf distribution.
    pub power: f64,
    /// Average the KL term over correctly classified samples only (the official `--mask`,
    /// off by default).
    pub mask_incorrect: bool,
}

impl Default for ZipfLabelSmoothing {
    fn default() -> Self {
        Self {
            weight: 0.1,
            power: 1.0,
            mask_incorrect: false,
        }
    }
}

impl ZipfLabelSmoothing {
    /// The official ImageNet configuration with a given weight.
    pub fn new(weight: f64) -> Self {
        Self {
            weight,
            ..Self::default()
        }
    }

    /// The full loss: hard-label CE on `logits` plus `weight` times the Zipf KL term.
    pub fn forward(
        &self,
        logits: &Tensor,
        dense_logits: &Tensor,
        targets: &Tensor,
    ) -> Result<Tensor> {
        const WHAT: &str = "zipf_label_smoothing";
        let (_, _, z) = logits_2d(logits, WHAT)?;
        let labels = labels(targets, &z)?;
        let idx = index_tensor(&labels, z.device())?;
        let ce = per_sample_ce(&log_softmax(&z)?, &idx)?.mean_all()?;
        let kl = self.kl_term(&z, dense_logits, (&labels, &idx))?;
        finite_loss((ce + (kl * self.weight)?)?, logits, WHAT)
    }

    /// The KL term alone (batch-averaged, without the weight).
    pub fn zipf_term(
        &self,
        logits: &Tensor,
        dense_logits: &Tensor,
        targets: &Tensor,
    ) -> Result<Tensor> {
        const WHAT: &str = "zipf_label_smoothing";
        let (_, _, z) = logits_2d(logits, WHAT)?;
        let labels = labels(targets, &z)?;
        let idx = index_tensor(&labels, z.device())?;
        finite_loss(
            self.kl_term(&z, dense_logits, (&labels, &idx))?,
            logits,
            WHAT,
        )
    }

    /// The KL term from the logits `z`, the dense logits and the labels on the host and as the
    /// `[B, 1]` index tensor on `z`'s device. The dense logits' votes are read back (each
    /// location's winner ranks the classes on the host); nothing else is.
    fn kl_term(
        &self,
        z: &Tensor,
        dense_logits: &Tensor,
        (targets, idx): (&[u32], &Tensor),
    ) -> Result<Tensor> {
        finite_param(self.weight, "weight", "zipf_label_smoothing")?;
        finite_param(self.power, "power", "zipf_label_smoothing")?;
        let (b, k) = z.dims2()?;
        let votes = dense_votes(dense_logits, b, k)?;
        let mut pdf = Vec::with_capacity(b * (k - 1));
        let mut others = Vec::with_capacity(b * (k - 1));
        for (sample_votes, &y) in votes.chunks(k).zip(targets) {
            let ranks = min_ranks(sample_votes);
            let mass: Vec<f64> = ranks
                .iter()
                .map(|&r| (r as f64).powf(-self.power))
                .collect();
            let norm: f64 = mass
                .iter()
                .enumerate()
                .filter(|&(c, _)| c != y as usize)
                .map(|(_, m)| m)
                .sum();
            for (c, m) in mass.iter().enumerate().filter(|&(c, _)| c != y as usize) {
                pdf.push(m / norm);
                others.push(c as u32);
            }
        }
        let device = z.device();
        let pdf = Tensor::from_vec(pdf, (b, k - 1), device)?.to_dtype(z.dtype())?;
        let others = Tensor::from_vec(others, (b, k - 1), device)?;
        let log_q = log_softmax(&z.gather(&others, 1)?)?;
        // KL(p || q) = sum p (log p - log q); p > 0 everywhere since every rank is finite.
        let kl = (&pdf * (pdf.log()? - log_q)?)?.sum(D::Minus1)?; // [B]
        if !self.mask_incorrect {
            return kl.mean_all();
        }
        let correct = z
            .argmax_keepdim(D::Minus1)?
            .eq(idx)?
            .squeeze(1)?
            .to_dtype(z.dtype())?;
        // The mean over the correct samples (over none: 0), on the device.
        let count = correct.sum_all()?.maximum(1.0)?;
        (kl * correct)?.sum_all()?.div(&count)
    }
}

/// The checked class indices on the host: read from `targets` where they are (nothing from
/// a GPU when a training loop passes its host labels).
fn labels(targets: &Tensor, z: &Tensor) -> Result<Vec<u32>> {
    let (b, k) = z.dims2()?;
    class_index_values(targets, b, k, "zipf_label_smoothing")
}

/// Per-sample vote counts `[B * K]`: how many locations of the dense logits have each class as
/// their argmax.
fn dense_votes(dense_logits: &Tensor, batch: usize, num_classes: usize) -> Result<Vec<u32>> {
    let dims = dense_logits.dims();
    if dims.len() != 4 || dims[0] != batch || dims[1] != num_classes {
        bail!(
            "zipf_label_smoothing: dense logits must have shape [{batch}, {num_classes}, H, W], got {dims:?}"
        );
    }
    let winners: Vec<Vec<u32>> = dense_logits.flatten_from(2)?.argmax(1)?.to_vec2()?; // [B, H*W]
    let mut votes = vec![0u32; batch * num_classes];
    for (b, row) in winners.iter().enumerate() {
        for &c in row {
            votes[b * num_classes + c as usize] += 1;
        }
    }
    Ok(votes)
}

/// Ranks by descending votes, 1-based, ties sharing the minimum rank
/// (`rankdata(-votes, method="min")`).
fn min_ranks(votes: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..votes.len()).collect();
    order.sort_by(|&a, &b| votes[b].cmp(&votes[a]));
    let mut ranks = vec![0; votes.len()];
    for (position, &class) in order.iter().enumerate() {
        let tied_with_previous = position > 0 && votes[order[position - 1]] == votes[class];
        ranks[class] = if tied_with_previous {
            ranks[order[position - 1]]
        } else {
            position + 1
        };
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::min_ranks;

    #[test]
    fn ranks_ties_at_the_minimum_like_scipy() {
        // scipy.stats.rankdata(-np.array([3, 0, 5, 3, 0]), method="min") == [2, 4, 1, 2, 4]
        assert_eq!(min_ranks(&[3, 0, 5, 3, 0]), vec![2, 4, 1, 2, 4]);
        assert_eq!(min_ranks(&[0, 0, 0]), vec![1, 1, 1]);
    }
}
