//! Feature extraction: penultimate features, logits and labels of a whole split, streamed to a
//! feature file (`features` [N, D] f32, `logits` [N, K] f32, `labels` [N] i64).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use maxsup_data::{ClassIndexConverter, Loader};
use maxsup_metrics::FeatureFileWriter;
use maxsup_models::ImageClassifier;
use maxsup_ops::{PendingRead, ReadBack};

/// One batch's values on their way to the host.
struct Queued {
    features: PendingRead,
    logits: Option<PendingRead>,
    labels: Vec<i64>,
}

/// Runs `model` in eval mode over every batch of `loader`, writing the feature file at `out`
/// (without logits when the data's classes are not the model's).
/// `progress(done, total)` is called after each batch. Returns the number of samples.
///
/// `labels` maps the loader's label order to the model's, when they differ (released
/// torchvision/timm weights predict sorted-wnid classes while the zip cache labels in its map's
/// order; see `maxsup_data::ClassIndexConverter`).
pub fn extract_features(
    model: &dyn ImageClassifier,
    loader: &Loader,
    device: &Device,
    out: &Path,
    labels: Option<&ClassIndexConverter>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let total = loader.shard_indices().len();
    anyhow::ensure!(total > 0, "nothing to extract: the split has no samples");
    // Logits are written only when they score the labels: a transfer split (other classes than
    // the model's) gets features and labels alone, never logits next to foreign labels.
    let (d, k) = (model.num_features(), model.num_classes());
    let k = if loader.dataset().num_classes() == k {
        k
    } else {
        0
    };
    let mut writer = FeatureFileWriter::create(out, total, d, k)?;
    let mut done = 0;
    // Batch t's values are read once batch t + 1 is queued, through copies right behind batch
    // t's own work (`ReadBack`; `to_vec1` would wait for batch t + 1 as well): a GPU does not
    // wait for the host between batches. f64 for the read-back, exact for f32.
    let mut read_back = ReadBack::new();
    let mut pending: Option<Queued> = None;
    let mut write = |read_back: &mut ReadBack, q: Queued| -> Result<()> {
        let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let features = to_f32(read_back.read(q.features)?);
        let logits = match q.logits {
            Some(l) => to_f32(read_back.read(l)?),
            None => Vec::new(),
        };
        writer
            .push(&features, &logits, &q.labels)
            .with_context(|| format!("writing {}", out.display()))?;
        done += q.labels.len();
        progress(done, total);
        Ok(())
    };
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = maxsup_train::images_tensor(&batch, device, DType::F32, None)?;
        let features = model.forward_features(&x, false)?.detach();
        let logits = match k > 0 {
            true => Some(read_back.queue(&model.forward_head(&features)?.to_dtype(DType::F64)?)?),
            false => None,
        };
        let labels: Vec<i64> = batch
            .labels
            .iter()
            .map(|&l| {
                Ok(i64::from(match labels {
                    Some(c) => c.zip_to_target(l)?,
                    None => l,
                }))
            })
            .collect::<Result<_>>()?;
        let queued = Queued {
            features: read_back.queue(&features.to_dtype(DType::F64)?)?,
            logits,
            labels,
        };
        if let Some(previous) = pending.replace(queued) {
            write(&mut read_back, previous)?;
        }
    }
    if let Some(last) = pending.take() {
        write(&mut read_back, last)?;
    }
    writer.finish()?;
    Ok(done)
}
