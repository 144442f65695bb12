//! `maxsup calibration FEATURES.safetensors`: top-1/top-5 accuracy, NLL, ECE and reliability
//! data of the stored logits, plus the share of near-zero logits (paper Fig. 5 statistic).

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use maxsup_metrics::{
    analyze_logits, labels_to_classes, CalibrationAccumulator, FeatureFile,
    DEFAULT_NEAR_ZERO_THRESHOLD,
};
use std::path::PathBuf;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Feature file (safetensors with `features`, `logits`, `labels`).
    pub features: PathBuf,
    /// Print JSON (with reliability-diagram bins) instead of text.
    #[arg(long)]
    pub json: bool,
    /// ECE bin counts.
    #[arg(long, value_parser = super::at_least_one(), value_delimiter = ',', default_values_t = [10usize, 15])]
    pub bins: Vec<usize>,
    /// |z| below this counts as a near-zero logit.
    #[arg(long, default_value_t = DEFAULT_NEAR_ZERO_THRESHOLD)]
    pub near_zero_threshold: f32,
    /// Rows read from the feature file per batch (bounds the memory used).
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 8192)]
    pub batch_rows: usize,
}

pub fn run(args: Args) -> Result<()> {
    let file = FeatureFile::open(&args.features)?;
    let k = file.require_logits("maxsup calibration")?;
    let mut acc = CalibrationAccumulator::with_bins(k, &args.bins)?;
    let (mut share_sum, mut top1_sum) = (0.0, 0.0);
    for batch in file.batches(args.batch_rows) {
        let batch = batch?;
        let labels = labels_to_classes(&batch.labels)
            .with_context(|| format!("in {}", args.features.display()))?;
        acc.push(&batch.logits, &labels)
            .with_context(|| format!("in {}", args.features.display()))?;
        let s = analyze_logits(&batch.logits, k, args.near_zero_threshold)?;
        share_sum += s.near_zero_share.iter().sum::<f64>();
        top1_sum += s.top1_probability.iter().sum::<f64>();
    }
    let r = acc
        .report()
        .with_context(|| format!("in {}", args.features.display()))?;
    let n = r.samples as f64;
    if args.json {
        let out = serde_json::json!({
            "calibration": r,
            "near_zero_threshold": args.near_zero_threshold,
            "mean_near_zero_share": share_sum / n,
            "mean_top1_probability": top1_sum / n,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}: {} samples, K = {k}",
        args.features.display(),
        r.samples
    );
    println!("top-1 accuracy {:.4}", r.top1);
    println!("top-5 accuracy {:.4}", r.top5);
    println!("NLL            {:.4}", r.nll);
    for d in &r.reliability {
        println!("ECE ({:>2} bins)  {:.4}", d.num_bins, d.ece);
    }
    println!("mean top-1 probability {:.4}", top1_sum / n);
    println!(
        "mean share of |z| < {}: {:.4}",
        args.near_zero_threshold,
        share_sum / n
    );
    Ok(())
}
