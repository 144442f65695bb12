//! Mixup / CutMix in timm's "batch" mode, as DeiT uses them (`--mixup 0.8 --cutmix 1.0
//! --mixup-prob 1.0 --mixup-switch-prob 0.5 --mixup-mode batch`).
//!
//! Semantics (timm `Mixup`): once per batch, with probability `prob`, choose CutMix with probability
//! `switch_prob` (else Mixup) and draw `lam ~ Beta(alpha, alpha)` of the chosen method. Sample `i` is
//! mixed with sample `B-1-i` (the batch reversed). CutMix pastes a box of side `sqrt(1-lam)` times the
//! image side centred at a uniform point (clipped), and `lam` is corrected to the pasted area.
//! Targets: `lam * onehot_s(y) + (1-lam) * onehot_s(reverse(y))`, with label smoothing `s`
//! (on = 1 - s + s/K, off = s/K). Applied to normalized images, as DeiT does.

use crate::batch::{Batch, BatchImages};
use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct Mixup {
    /// Beta parameter of Mixup; 0 disables Mixup.
    pub mixup_alpha: f64,
    /// Beta parameter of CutMix; 0 disables CutMix.
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// Probability of CutMix when both are enabled.
    pub switch_prob: f64,
    /// Label smoothing folded into the soft targets (DeiT default 0.1; the MaxSup runs use 0).
    pub label_smoothing: f64,
    pub num_classes: usize,
}

/// What happened to one batch (for tests and logging).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixDecision {
    /// Weight of the original sample after any CutMix area correction.
    pub lam: f64,
    /// `(y_lo, y_hi, x_lo, x_hi)` of the pasted box when CutMix was used.
    pub cutmix_box: Option<(usize, usize, usize, usize)>,
}

impl Mixup {
    /// DeiT's defaults with the given label smoothing.
    pub fn deit(num_classes: usize, label_smoothing: f64) -> Mixup {
        Mixup {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            prob: 1.0,
            switch_prob: 0.5,
            label_smoothing,
            num_classes,
        }
    }

    /// Draws this batch's parameters (timm `_params_per_batch` + `rand_bbox`) for an image of `h x w`.
    pub fn decide(&self, h: usize, w: usize, rng: &mut Rng) -> MixDecision {
        let mut lam = 1.0;
        let mut use_cutmix = false;
        if rng.uniform() < self.prob {
            if self.mixup_alpha > 0.0 && self.cutmix_alpha > 0.0 {
                use_cutmix = rng.uniform() < self.switch_prob;
                let a = if use_cutmix {
                    self.cutmix_alpha
                } else {
                    self.mixup_alpha
                };
                lam = rng.beta(a, a);
            } else if self.mixup_alpha > 0.0 {
                lam = rng.beta(self.mixup_alpha, self.mixup_alpha);
            } else if self.cutmix_alpha > 0.0 {
                use_cutmix = true;
                lam = rng.beta(self.cutmix_alpha, self.cutmix_alpha);
            }
        }
        if lam == 1.0 || !use_cutmix {
            return MixDecision {
                lam,
                cutmix_box: None,
            };
        }
        let ratio = (1.0 - lam).sqrt();
        let (cut_h, cut_w) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
        let cy = rng.below(h as u64) as i64;
        let cx = rng.below(w as u64) as i64;
        let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
        let (yl, yh) = (clip(cy - cut_h / 2, h), clip(cy + cut_h / 2, h));
        let (xl, xh) = (clip(cx - cut_w / 2, w), clip(cx + cut_w / 2, w));
        let lam = 1.0 - ((yh - yl) * (xh - xl)) as f64 / (h * w) as f64;
        MixDecision {
            lam,
            cutmix_box: Some((yl, yh, xl, xh)),
        }
    }

    /// Mixes the batch in place and sets its soft targets.
    pub fn apply(&self, batch: &mut Batch, rng: &mut Rng) -> anyhow::Result<MixDecision> {
        anyhow::ensure!(
            batch.num_classes == self.num_classes,
            "Mixup expects {} classes, batch has {}",
            self.num_classes,
            batch.num_classes
        );
        let BatchImages::Normalized(images) = &mut batch.images else {
            anyhow::bail!("Mixup/CutMix mixes normalized images; this batch holds 8-bit pixels");
        };
        let [b, c, h, w] = batch.shape;
        let d = self.decide(h, w, rng);
        let per = c * h * w;
        let original = images.clone();
        if let Some((yl, yh, xl, xh)) = d.cutmix_box {
            for i in 0..b {
                let j = b - 1 - i;
                for ch in 0..c {
                    for y in yl..yh {
                        let row = ch * h * w + y * w;
                        images[i * per + row + xl..i * per + row + xh]
                            .copy_from_slice(&original[j * per + row + xl..j * per + row + xh]);
                    }
                }
            }
        } else if d.lam != 1.0 {
            let lam = d.lam as f32;
            for i in 0..b {
                let j = b - 1 - i;
                for (k, v) in images[i * per..(i + 1) * per].iter_mut().enumerate() {
                    *v = *v * lam + original[j * per + k] * (1.0 - lam);
                }
            }
        }
        let k = self.num_classes;
        let off = self.label_smoothing / k as f64;
        let on = 1.0 - self.label_smoothing + off;
        let mut targets = vec![0f32; b * k];
        for i in 0..b {
            let row = &mut targets[i * k..(i + 1) * k];
            for v in row.iter_mut() {
                *v = off as f32;
            }
            let (ya, yb) = (batch.labels[i] as usize, batch.labels[b - 1 - i] as usize);
            anyhow::ensure!(ya < k && yb < k, "label out of range 0..{k} in Mixup");
            row[ya] += ((on - off) * d.lam) as f32;
            row[yb] += ((on - off) * (1.0 - d.lam)) as f32;
        }
        batch.soft_targets = Some(targets);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(b: usize) -> Batch {
        let per = 3 * 8 * 8;
        Batch {
            images: BatchImages::Normalized((0..b * per).map(|i| (i / per) as f32).collect()),
            shape: [b, 3, 8, 8],
            labels: (0..b as u32).collect(),
            soft_targets: None,
            num_classes: 5,
            indices: (0..b).collect(),
        }
    }

    #[test]
    fn targets_sum_to_one_and_match_lam() {
        let m = Mixup::deit(5, 0.1);
        for seed in 0..40 {
            let mut bt = batch(4);
            let d = m.apply(&mut bt, &mut Rng::from_seed(seed)).unwrap();
            let t = bt.soft_targets.clone().unwrap();
            for i in 0..4 {
                let row = &t[i * 5..(i + 1) * 5];
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                // Sample 0 pairs with sample 3: weight of its own label = lam*(0.9) + 0.02.
                assert!((row[i] as f64 - (0.9 * d.lam + 0.02)).abs() < 1e-5);
            }
            // Image 0 is lam * 0 + (1 - lam) * 3 everywhere (Mixup) or 3 inside the box (CutMix).
            let all = bt.normalized_images();
            let img0 = &all[..192];
            match d.cutmix_box {
                None => assert!(img0
                    .iter()
                    .all(|&v| (v as f64 - 3.0 * (1.0 - d.lam)).abs() < 1e-4)),
                Some((yl, yh, xl, xh)) => {
                    let inside = img0.iter().filter(|&&v| v == 3.0).count();
                    assert_eq!(inside, 3 * (yh - yl) * (xh - xl));
                    assert!((d.lam - (1.0 - inside as f64 / 192.0)).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn switch_prob_splits_methods() {
        let m = Mixup::deit(5, 0.0);
        let mut rng = Rng::from_seed(9);
        let cut = (0..4000)
            .filter(|_| m.decide(224, 224, &mut rng).cutmix_box.is_some())
            .count();
        assert!((1800..2200).contains(&cut), "{cut}");
    }
}
