//! Online Label Smoothing (Zhang et al., TIP 2021), following the official algorithm.

use std::collections::HashMap;

use candle_core::{bail, DType, Device, Result, Tensor, D};

use crate::cross_entropy::{per_sample_ce, per_sample_soft_ce};
use crate::log_softmax::log_softmax;
use crate::validate::{class_indices, finite_loss, logits_2d};

/// Online Label Smoothing: `0.5 * CE(z, y) + 0.5 * CE(z, S[y])` where row `S[c]` of a `K x K`
/// supervision matrix is the mean softmax output of the samples of class `c` that were
/// classified correctly during the previous epoch.
///
/// This is the official algorithm of the OLS authors (Zhang et al., TIP 2021, arXiv 2011.12562): `S` starts at zero (so
/// the first epoch is `0.5 * CE`), statistics are accumulated during the epoch from detached
/// softmax outputs of correctly classified training samples, and [`end_epoch`](Self::end_epoch)
/// rebuilds `S`, with the uniform row `1/K` for a class that had no correct sample. (The MaxSup
/// repository's own re-implementation leaves zero rows and is never advanced; we do not follow
/// it.)
///
/// The accumulators live on the logits' device, so a training step needs no host round trip
/// beyond the label check. All state is exposed by [`state`](Self::state) for checkpoints;
/// restoring it mid-epoch resumes exactly.
#[derive(Debug, Clone)]
pub struct OnlineLabelSmoothing {
    num_classes: usize,
    hard_weight: f64,
    soft_weight: f64,
    /// `S`, `[K, K]` f32: row c is the soft target of class c for the current epoch.
    supervision: Tensor,
    /// Sum of the softmax rows of correctly classified samples, per class, `[K, K]` f32.
    next_sum: Tensor,
    /// Number of correctly classified samples per class this epoch, `[K]` f32.
    next_count: Tensor,
}

const STATE_KEYS: [&str; 3] = ["ols.supervision", "ols.next_sum", "ols.next_count"];

impl OnlineLabelSmoothing {
    /// The official configuration: weights 0.5 / 0.5, `S` initialized to zeros.
    pub fn new(num_classes: usize, device: &Device) -> Result<Self> {
        Self::with_weights(num_classes, 0.5, 0.5, device)
    }

    /// Custom weights for the hard and the soft term (the official fine-grained script uses
    /// 1.0 / 1.0).
    pub fn with_weights(
        num_classes: usize,
        hard_weight: f64,
        soft_weight: f64,
        device: &Device,
    ) -> Result<Self> {
        if num_classes < 2 {
            bail!("OnlineLabelSmoothing: need at least 2 classes, got {num_classes}");
        }
        let k = num_classes;
        Ok(Self {
            num_classes,
            hard_weight,
            soft_weight,
            supervision: Tensor::zeros((k, k), DType::F32, device)?,
            next_sum: Tensor::zeros((k, k), DType::F32, device)?,
            next_count: Tensor::zeros(k, DType::F32, device)?,
        })
    }

    /// The loss for a batch. With `train`, correctly classified samples are added to this
    /// epoch's statistics; evaluation batches leave the state untouched.
    pub fn forward(&mut self, logits: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        const WHAT: &str = "online_label_smoothing";
        let (_, k, z) = logits_2d(logits, WHAT)?;
        if k != self.num_classes {
            bail!(
                "{WHAT}: logits have {k} classes, the supervision matrix {}",
                self.num_classes
            );
        }
        let idx = class_indices(targets, &z, WHAT)?;
        let log_probs = log_softmax(&z)?;
        let hard = per_sample_ce(&log_probs, &idx)?;
        let rows = self
            .supervision
            .to_dtype(z.dtype())?
            .index_select(&idx.squeeze(1)?, 0)?;
        let soft = per_sample_soft_ce(&log_probs, &rows)?;
        let loss = ((hard * self.hard_weight)? + (soft * self.soft_weight)?)?.mean_all()?;
        let loss = finite_loss(loss, logits, WHAT)?;
        if train {
            self.accumulate(&log_probs, &idx)?;
        }
        Ok(loss)
    }

    fn accumulate(&mut self, log_probs: &Tensor, idx: &Tensor) -> Result<()> {
        let probs = log_probs.detach().exp()?.to_dtype(DType::F32)?;
        let predicted = probs.argmax_keepdim(D::Minus1)?;
        let correct = predicted.eq(idx)?.to_dtype(DType::F32)?; // [B, 1]
        let classes = idx.squeeze(1)?;
        let masked = probs.broadcast_mul(&correct)?;
        self.next_sum = self.next_sum.index_add(&classes, &masked, 0)?;
        self.next_count = self
            .next_count
            .index_add(&classes, &correct.squeeze(1)?, 0)?;
        Ok(())
    }

    /// Rebuilds the supervision matrix from this epoch's statistics and resets them. Call once
    /// at the end of every training epoch.
    pub fn end_epoch(&mut self) -> Result<()> {
        let k = self.num_classes;
        let counts = self.next_count.unsqueeze(1)?; // [K, 1]
        let has = counts.ge(1.0)?.broadcast_as((k, k))?;
        let mean = self.next_sum.broadcast_div(&counts.clamp(1.0, f64::MAX)?)?;
        let uniform = Tensor::full(1.0 / k as f32, (k, k), mean.device())?;
        self.supervision = has.where_cond(&mean, &uniform)?;
        self.next_sum = self.next_sum.zeros_like()?;
        self.next_count = self.next_count.zeros_like()?;
        Ok(())
    }

    /// The current supervision matrix `S`, `[K, K]` f32.
    pub fn supervision(&self) -> &Tensor {
        &self.supervision
    }

    /// All state, for a checkpoint: `ols.supervision`, `ols.next_sum`, `ols.next_count`.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let values = [&self.supervision, &self.next_sum, &self.next_count];
        STATE_KEYS
            .iter()
            .zip(values)
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// Restores the state saved by [`state`](Self::state), checking names and shapes.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let k = self.num_classes;
        let device = self.supervision.device().clone();
        let fetch = |key: &str, shape: &[usize]| -> Result<Tensor> {
            let t = state.get(key).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "OnlineLabelSmoothing state: missing tensor `{key}`"
                ))
            })?;
            if t.dims() != shape {
                bail!(
                    "OnlineLabelSmoothing state: `{key}` has shape {:?}, expected {shape:?}",
                    t.dims()
                );
            }
            t.to_dtype(DType::F32)?.to_device(&device)
        };
        let supervision = fetch(STATE_KEYS[0], &[k, k])?;
        let next_sum = fetch(STATE_KEYS[1], &[k, k])?;
        let next_count = fetch(STATE_KEYS[2], &[k])?;
        (self.supervision, self.next_sum, self.next_count) = (supervision, next_sum, next_count);
        Ok(())
    }
}
