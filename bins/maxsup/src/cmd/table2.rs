//! `maxsup table2`: the paper's linear-transfer table. For each pretrained run, a multinomial
//! logistic regression (L2, L-BFGS, lambda chosen among 45 log-spaced values on a held-out split)
//! is fitted on frozen features of a second dataset and scored on its test split.
//!
//! Expects `<runs>/<method>/transfer_{train,test}.safetensors`, as `just reproduce-table2` writes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use maxsup_metrics::{labels_to_classes, run_probe, FeatureFile, ProbeConfig, ProbeData};

/// Directory name, row label, the paper's accuracy (ResNet-50 ImageNet features probed on
/// CIFAR-10, paper Table 3), when the paper reports one.
const ROWS: [(&str, &str, Option<f64>); 6] = [
    ("ce", "Baseline", Some(0.814)),
    ("ls", "Label Smoothing", Some(0.746)),
    ("ols", "Online LS", None),
    ("zipf", "Zipf's LS", None),
    ("maxsup", "MaxSup", Some(0.810)),
    ("lp", "Logit Penalty", Some(0.724)),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with one sub-directory per method.
    #[arg(long)]
    pub runs: PathBuf,
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A line describing how the runs were made, for the markdown file.
    #[arg(long, default_value = "")]
    pub note: String,
}

fn probe_data(path: &Path) -> Result<ProbeData> {
    let file = FeatureFile::open(path)?;
    let all = file.read_all()?;
    Ok(ProbeData {
        features: all.features,
        labels: labels_to_classes(&all.labels)?,
        dim: file.feature_dim(),
    })
}

pub fn run(args: Args) -> Result<()> {
    let mut md = String::new();
    writeln!(md, "| Pretraining loss | Linear-probe test accuracy | chosen λ | paper (ImageNet → CIFAR-10) |")?;
    writeln!(md, "|---|---|---|---|")?;
    let mut rows = 0;
    for (dir, label, paper) in ROWS {
        let base = args.runs.join(dir);
        let (train, test) = (
            base.join("transfer_train.safetensors"),
            base.join("transfer_test.safetensors"),
        );
        if !train.exists() || !test.exists() {
            continue;
        }
        let report = run_probe(
            probe_data(&train)?,
            probe_data(&test)?,
            &ProbeConfig::default(),
        )?;
        let paper = paper.map_or("–".to_string(), |p| format!("{:.1}%", 100.0 * p));
        writeln!(
            md,
            "| {label} | {:.2}% | {:.3e} | {paper} |",
            100.0 * report.test_accuracy,
            report.chosen_lambda
        )?;
        rows += 1;
    }
    if rows == 0 {
        bail!(
            "no run in {} has transfer_train/test.safetensors",
            args.runs.display()
        );
    }
    print!("{md}");
    if let Some(out) = &args.out {
        let mut doc = String::from("# Table 2 reproduction (linear transfer)\n\n");
        if !args.note.is_empty() {
            writeln!(doc, "{}\n", args.note)?;
        }
        doc.push_str(&md);
        std::fs::write(out, doc)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}
