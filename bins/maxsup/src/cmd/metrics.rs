//! `maxsup metrics FEATURES.safetensors`: Kornblith class separation (d_within, d_total, R²) of
//! the penultimate features in a feature file, computed in one streaming pass.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use maxsup_metrics::{labels_to_classes, ClassSeparation, FeatureFile};
use std::path::PathBuf;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Feature file (safetensors with `features`, `logits`, `labels`).
    pub features: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Rows decoded per batch (memory use is about batch_rows x D x 4 bytes).
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 8192)]
    pub batch_rows: usize,
}

pub fn run(args: Args) -> Result<()> {
    let file = FeatureFile::open(&args.features)?;
    let mut acc = ClassSeparation::new(file.feature_dim());
    for batch in file.batches(args.batch_rows) {
        let batch = batch?;
        let labels = labels_to_classes(&batch.labels)
            .with_context(|| format!("in {}", args.features.display()))?;
        acc.push(&batch.features, &labels)
            .with_context(|| format!("in {}", args.features.display()))?;
    }
    let m = acc
        .finish()
        .with_context(|| format!("in {}", args.features.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!(
            "{}: {} samples, {} classes, D = {}",
            args.features.display(),
            m.num_samples,
            m.num_classes,
            file.feature_dim()
        );
        println!("d_within {:.4}", m.d_within);
        println!("d_total  {:.4}", m.d_total);
        println!("R^2      {:.4}", m.r2);
    }
    Ok(())
}
