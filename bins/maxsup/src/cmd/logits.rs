//! `maxsup logits`: the paper's logit analysis (near-zero share, top-1 probability, density) of
//! one or more feature files, printed and plotted side by side.

use std::path::PathBuf;

use anyhow::{bail, Result};
use maxsup_metrics::{analyze_logits, FeatureFile, DEFAULT_NEAR_ZERO_THRESHOLD};
use maxsup_viz::{
    plot_logit_density, plot_near_zero_share_histograms, plot_top1_vs_near_zero,
    LogitSummarySeries, NamedSeries, PlotOptions, DEFAULT_LOGIT_RANGE,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Feature files (from `maxsup extract`).
    #[arg(required = true)]
    pub features: Vec<PathBuf>,
    /// Names of the checkpoints, in order (default: file names).
    #[arg(long, num_args = 1..)]
    pub names: Vec<String>,
    /// |z| below this counts as near zero.
    #[arg(long, default_value_t = DEFAULT_NEAR_ZERO_THRESHOLD)]
    pub threshold: f32,
    /// Use at most this many samples per file (the official density plot uses 10,000).
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 10_000)]
    pub limit: usize,
    /// Directory for near_zero_share.png, top1_vs_near_zero.png, logit_density.png.
    #[arg(long)]
    pub out_dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    if !args.names.is_empty() && args.names.len() != args.features.len() {
        bail!(
            "--names: {} names for {} files",
            args.names.len(),
            args.features.len()
        );
    }
    std::fs::create_dir_all(&args.out_dir)?;
    let mut summaries = vec![];
    let mut densities = vec![];
    println!(
        "{:<24} {:>8} {:>14} {:>12}",
        "checkpoint", "samples", "near-zero share", "top-1 prob"
    );
    for (i, path) in args.features.iter().enumerate() {
        let file = FeatureFile::open(path)?;
        let n = file.len().min(args.limit);
        let rows = file.read_rows(0, n)?;
        let k = file.require_logits("maxsup logits")?;
        let summary = analyze_logits(&rows.logits, k, args.threshold)?;
        let name = args.names.get(i).cloned().unwrap_or_else(|| {
            path.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into()
        });
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "{:<24} {:>8} {:>14.4} {:>12.4}",
            name,
            n,
            mean(&summary.near_zero_share),
            mean(&summary.top1_probability)
        );
        summaries.push(LogitSummarySeries {
            name: name.clone(),
            near_zero_share: summary.near_zero_share,
            top1_probability: summary.top1_probability,
        });
        densities.push(NamedSeries {
            name,
            values: rows.logits,
        });
    }
    let dir = &args.out_dir;
    plot_near_zero_share_histograms(
        &summaries,
        30,
        dir.join("near_zero_share.png"),
        &PlotOptions::titled("Share of near-zero logits"),
    )?;
    plot_top1_vs_near_zero(
        &summaries,
        dir.join("top1_vs_near_zero.png"),
        &PlotOptions::titled("Top-1 probability vs near-zero share"),
    )?;
    plot_logit_density(
        &densities,
        DEFAULT_LOGIT_RANGE,
        120,
        dir.join("logit_density.png"),
        &PlotOptions::titled("Logit density"),
    )?;
    println!("plots in {}", dir.display());
    Ok(())
}
