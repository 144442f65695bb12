//! What a training step reports (loss, correct predictions, the LS decomposition), kept on the
//! device until the next step has been queued and then read back in one transfer.
//!
//! On a GPU a plain read of a device value waits for the queue to drain, and while the host
//! waits for step `t` it cannot prepare or queue step `t + 1`: the GPU idles for the upload of
//! the next batch and the first kernel launches. So the report's copy to the host is queued
//! right behind the step's own work ([`maxsup_ops::ReadBack`]: page-locked memory and an event),
//! the trainer reads it after queueing step `t + 1`, waiting only for step `t`, and goes on to
//! prepare step `t + 2` while step `t + 1` runs. That read is the step's only one: the losses run under
//! [`maxsup_loss::defer_finite_checks`] and the labels are range-checked on the host. A
//! non-finite loss is still an error naming its step; by then step `t + 1` has run too, which
//! loses nothing that was written (checkpoints are written after an epoch's last report).
//! On the CPU the values are computed when the step runs and the read is a copy.

use anyhow::Result;
use candle_core::{DType, Tensor};
use maxsup_loss::{check_finite_loss, ls_decomposition};
use maxsup_ops::{PendingRead, ReadBack};

use crate::data_parallel::DataParallel;

/// Where a step sits in the run, for its event and for the error of a failed step.
#[derive(Debug, Clone)]
pub(super) struct StepPosition {
    pub epoch: usize,
    /// Batch index within the epoch.
    pub batch: usize,
    /// The global step count after this step.
    pub global_step: u64,
    pub lr: f64,
    /// Dataset indices of the batch's samples (the first few are named in errors).
    pub samples: Vec<usize>,
}

/// A queued step's report, not yet read from the device.
pub(super) struct PendingReport {
    /// `[4]` f64 on its way to the host: loss, correct predictions, LS regularization, LS
    /// error amplification.
    values: PendingRead,
    /// The step's detached `[B, K]` logits, read only to explain a non-finite loss.
    logits: Tensor,
    samples: usize,
    pub position: StepPosition,
}

/// A read report, over the global batch in a data-parallel run.
pub(super) struct StepResult {
    /// Samples of the (global) batch.
    pub samples: usize,
    pub loss: f64,
    pub correct: usize,
    pub ls_regularization: f64,
    pub ls_error_amplification: f64,
}

impl PendingReport {
    /// Queues the report's arithmetic after the step: `loss` is the step's scalar loss,
    /// `logits` its f32 logits, `targets` (device) for the accuracy and `host_targets` (the same
    /// labels on the CPU, already checked) for the LS decomposition; the copy to the host is
    /// queued in a buffer of `read_back`.
    #[allow(clippy::too_many_arguments)]
    pub fn queue(
        read_back: &mut ReadBack,
        loss: &Tensor,
        logits: &Tensor,
        targets: &Tensor,
        host_targets: &Tensor,
        alpha: f64,
        position: StepPosition,
    ) -> Result<PendingReport> {
        let logits = logits.detach();
        let parts = {
            let _deferred = maxsup_loss::defer_finite_checks();
            ls_decomposition(&logits, host_targets, alpha.clamp(0.0, 1.0))?
        };
        let correct = logits
            .argmax(1)?
            .eq(targets)?
            .to_dtype(DType::F64)?
            .sum_all()?;
        let values = read_back.queue(&Tensor::stack(
            &[
                loss.detach().to_dtype(DType::F64)?,
                correct,
                parts.regularization.to_dtype(DType::F64)?,
                parts.error_amplification.to_dtype(DType::F64)?,
            ],
            0,
        )?)?;
        Ok(PendingReport {
            values,
            samples: logits.dim(0)?,
            logits,
            position,
        })
    }

    /// Reads the report (the step's one device-to-host transfer, waiting for this step's work
    /// only), fails on a non-finite loss, and sums it over the ranks of a data-parallel run.
    pub fn read(
        self,
        read_back: &mut ReadBack,
        parallel: Option<&mut DataParallel>,
    ) -> Result<StepResult> {
        let report = read_back.read(self.values)?;
        check_finite_loss(report[0], &self.logits, "training loss")?;
        let n = self.samples as f64;
        // Over the global batch: means weighted by each rank's samples, counts summed.
        let mut global = [report[0] * n, report[1], report[2] * n, report[3] * n, n];
        if let Some(p) = parallel {
            p.sum(&mut global)?;
        }
        let total = global[4];
        Ok(StepResult {
            loss: global[0] / total,
            correct: global[1] as usize,
            ls_regularization: global[2] / total,
            ls_error_amplification: global[3] / total,
            samples: total as usize,
        })
    }
}
