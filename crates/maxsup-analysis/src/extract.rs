//! Feature extraction: penultimate features, logits and labels of a whole split, streamed to a
//! feature file (`features` [N, D] f32, `logits` [N, K] f32, `labels` [N] i64).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use maxsup_data::{ClassIndexConverter, Loader};
use maxsup_metrics::FeatureFileWriter;
use maxsup_models::ImageClassifier;

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
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = maxsup_train::images_tensor(&batch, device, DType::F32, None)?;
        let features = model.forward_features(&x, false)?;
        let to_host = |t: Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let logits = if k > 0 {
            to_host(model.forward_head(&features)?)?
        } else {
            Vec::new()
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
        writer
            .push(&to_host(features)?, &logits, &labels)
            .with_context(|| format!("writing {}", out.display()))?;
        done += batch.len();
        progress(done, total);
    }
    writer.finish()?;
    Ok(done)
}
