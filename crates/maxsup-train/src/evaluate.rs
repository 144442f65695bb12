//! Evaluation: top-1/top-5, NLL and ECE (15 bins) over a loader, in eval mode.

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use maxsup_data::Loader;
use maxsup_metrics::CalibrationAccumulator;
use maxsup_models::ImageClassifier;
use maxsup_ops::{PendingRead, ReadBack, StagedUpload};

use crate::batch_tensor::images_tensor;
use crate::data_parallel::DataParallel;
use crate::events::EvalStats;

/// Runs `model` (eval mode: BatchNorm running statistics, no drop path) over every batch of
/// `loader`, with activations in `dtype` (f32, or bf16 for a mixed-precision run), and returns
/// the metrics.
pub fn evaluate(
    model: &dyn ImageClassifier,
    loader: &Loader,
    device: &Device,
    dtype: candle_core::DType,
    epoch: usize,
) -> Result<EvalStats> {
    evaluate_sharded(model, loader, device, dtype, epoch, None)
}

/// [`evaluate`] of this rank's shard, with the metrics' counts and sums added over the ranks
/// of `parallel`: the result is that of the whole split, exactly (up to f64 rounding of sums).
pub fn evaluate_sharded(
    model: &dyn ImageClassifier,
    loader: &Loader,
    device: &Device,
    dtype: candle_core::DType,
    epoch: usize,
    parallel: Option<&mut DataParallel>,
) -> Result<EvalStats> {
    let start = Instant::now();
    let mut acc = CalibrationAccumulator::with_bins(model.num_classes(), &[15])?;
    let mut staging = StagedUpload::new();
    // Batch t's logits are read after batch t + 1's forward pass is queued, through a copy put
    // on the stream right behind batch t's own work (`ReadBack`: `to_vec1` would wait for batch
    // t + 1 too), so that a GPU never waits for the host between batches; detached, so that the
    // forward graph behind them is freed at once. (f64 for the read-back: exact for bf16 and f32.)
    let mut read_back = ReadBack::new();
    let mut pending: Option<(PendingRead, Vec<u32>)> = None;
    let mut read =
        |read_back: &mut ReadBack, logits: PendingRead, labels: Vec<u32>| -> Result<()> {
            let logits: Vec<f32> = read_back
                .read(logits)?
                .into_iter()
                .map(|v| v as f32)
                .collect();
            acc.push(&logits, &labels)
        };
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = images_tensor(&batch, device, dtype, Some(&mut staging))?;
        let logits = model
            .forward_t(&x, false)?
            .detach()
            .to_dtype(candle_core::DType::F64)?;
        let queued = read_back.queue(&logits)?;
        if let Some((logits, labels)) = pending.replace((queued, batch.labels)) {
            read(&mut read_back, logits, labels)?;
        }
    }
    if let Some((logits, labels)) = pending.take() {
        read(&mut read_back, logits, labels)?;
    }
    let expected = loader.shard_indices().len() as u64;
    let mut sums = acc.to_sums();
    if sums[0] as u64 != expected {
        anyhow::bail!(
            "evaluation saw {} of its {expected} samples (the loader stopped early)",
            sums[0]
        );
    }
    if let Some(p) = parallel {
        p.sum(&mut sums)?;
        acc.set_sums(&sums)?;
    }
    let report = acc.report()?;
    Ok(EvalStats {
        epoch,
        samples: report.samples,
        top1: report.top1,
        top5: report.top5,
        nll: report.nll,
        ece15: report.ece(15).unwrap_or(f64::NAN),
        seconds: start.elapsed().as_secs_f64(),
    })
}
