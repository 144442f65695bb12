//! `maxsup table1`: the paper's Table 1 (intra-class variation and inter-class separability,
//! train and validation) from the feature files of a set of runs, beside the paper's numbers.
//!
//! Expects `<runs>/<method>/features_{train,val}.safetensors` for the methods present, as
//! `just reproduce-table1` writes them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use maxsup_metrics::{
    labels_to_classes, CalibrationAccumulator, ClassSeparation, FeatureFile, SeparationMetrics,
};

/// Methods in the paper's row order: directory name, row label, paper values (ResNet-50,
/// ImageNet, paper Tab. 14: d_within train/val, R^2 train/val).
const ROWS: [(&str, &str, [f64; 4]); 6] = [
    ("ce", "Baseline", [0.3114, 0.3313, 0.4025, 0.4451]),
    ("ls", "Label Smoothing", [0.2632, 0.2543, 0.4690, 0.4611]),
    ("ols", "Online LS", [0.2707, 0.2820, 0.5943, 0.5708]),
    ("zipf", "Zipf's LS", [0.2611, 0.2932, 0.5522, 0.4790]),
    ("maxsup", "MaxSup", [0.2926, 0.2998, 0.5188, 0.4972]),
    ("lp", "Logit Penalty", [0.2840, 0.3144, 0.6448, 0.6024]),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with one sub-directory per method (ce, ls, ols, zipf, maxsup, lp).
    #[arg(long)]
    pub runs: PathBuf,
    /// Also write the table as markdown here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A line describing how the runs were made, for the markdown file.
    #[arg(long, default_value = "")]
    pub note: String,
}

struct Measured {
    train: SeparationMetrics,
    val: SeparationMetrics,
    top1: f64,
}

fn separation(path: &Path) -> Result<(SeparationMetrics, Option<f64>)> {
    let file = FeatureFile::open(path)?;
    let mut sep = ClassSeparation::new(file.feature_dim());
    // Accuracy needs logits; the separation metrics do not (files without logits get no top-1).
    let mut calib = match file.num_logits() {
        0 => None,
        k => Some(CalibrationAccumulator::with_bins(k, &[15])?),
    };
    for batch in file.batches(4096) {
        let batch = batch?;
        let labels = labels_to_classes(&batch.labels)?;
        sep.push(&batch.features, &labels)?;
        if let Some(c) = calib.as_mut() {
            c.push(&batch.logits, &labels)?;
        }
    }
    let top1 = calib.map(|c| c.report().map(|r| r.top1)).transpose()?;
    Ok((sep.finish()?, top1))
}

pub fn run(args: Args) -> Result<()> {
    let mut measured = vec![];
    for (dir, label, paper) in ROWS {
        let base = args.runs.join(dir);
        let (train_path, val_path) = (
            base.join("features_train.safetensors"),
            base.join("features_val.safetensors"),
        );
        if !train_path.exists() || !val_path.exists() {
            continue;
        }
        let (train, _) = separation(&train_path)?;
        let (val, top1) = separation(&val_path)?;
        measured.push((
            label,
            paper,
            Measured {
                train,
                val,
                top1: top1.unwrap_or(f64::NAN),
            },
        ));
    }
    if measured.is_empty() {
        bail!(
            "no run in {} has features_train/val.safetensors",
            args.runs.display()
        );
    }
    let mut md = String::new();
    writeln!(md, "| Method | Val top-1 | Intra-class var. (train) | Intra-class var. (val) | Inter-class sep. R² (train) | Inter-class sep. R² (val) |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (label, paper, m) in &measured {
        writeln!(
            md,
            "| {label} | {:.2}% | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.4} ({:.4}) |",
            100.0 * m.top1,
            m.train.d_within,
            paper[0],
            m.val.d_within,
            paper[1],
            m.train.r2,
            paper[2],
            m.val.r2,
            paper[3]
        )?;
    }
    writeln!(md, "\nIn parentheses: the paper's values (ResNet-50 on ImageNet-1K, paper Table 1 / Table 14).")?;
    let (ls, ce, ms) = (
        find(&measured, "Label Smoothing"),
        find(&measured, "Baseline"),
        find(&measured, "MaxSup"),
    );
    if let (Some(ls), Some(ce), Some(ms)) = (ls, ce, ms) {
        let verdict = |ok: bool| if ok { "holds" } else { "does NOT hold" };
        writeln!(
            md,
            "\nQualitative claims (intra-class variation, both splits):"
        )?;
        for (split, ls, ce, ms) in [
            ("train", &ls.train, &ce.train, &ms.train),
            ("val", &ls.val, &ce.val, &ms.val),
        ] {
            writeln!(
                md,
                "- {split}: LS lowers it below the baseline's: {} (LS {:.5}, baseline {:.5})",
                verdict(ls.d_within < ce.d_within),
                ls.d_within,
                ce.d_within
            )?;
            writeln!(
                md,
                "- {split}: MaxSup keeps it above LS: {} (MaxSup {:.5}, LS {:.5})",
                verdict(ms.d_within > ls.d_within),
                ms.d_within,
                ls.d_within
            )?;
        }
    }
    print!("{md}");
    if let Some(out) = &args.out {
        let mut doc = String::from("# Table 1 reproduction\n\n");
        if !args.note.is_empty() {
            writeln!(doc, "{}\n", args.note)?;
        }
        doc.push_str(&md);
        std::fs::write(out, doc)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}

fn find<'a>(rows: &'a [(&str, [f64; 4], Measured)], label: &str) -> Option<&'a Measured> {
    rows.iter().find(|(l, _, _)| *l == label).map(|(_, _, m)| m)
}
