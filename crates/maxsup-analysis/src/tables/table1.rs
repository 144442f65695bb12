//! Table 1: intra-class variation and inter-class separability (train and validation), and the
//! paper's claims about them.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use maxsup_metrics::{
    labels_to_classes, CalibrationAccumulator, ClassSeparation, FeatureFile, SeparationMetrics,
};

use super::methods_with;

/// The paper's values per method, in [`super::METHODS`] order (ResNet-50, ImageNet, paper Tab. 14:
/// d_within train/val, R² train/val).
const PAPER: [[f64; 4]; 6] = [
    [0.3114, 0.3313, 0.4025, 0.4451],
    [0.2632, 0.2543, 0.4690, 0.4611],
    [0.2707, 0.2820, 0.5943, 0.5708],
    [0.2611, 0.2932, 0.5522, 0.4790],
    [0.2926, 0.2998, 0.5188, 0.4972],
    [0.2840, 0.3144, 0.6448, 0.6024],
];

/// One method's measured metrics and the paper's.
#[derive(Debug, Clone)]
pub struct Table1Row {
    pub label: &'static str,
    pub paper: [f64; 4],
    pub train: SeparationMetrics,
    pub val: SeparationMetrics,
    /// Validation top-1 (NaN when the feature file has no logits).
    pub top1: f64,
}

/// The measured table.
#[derive(Debug, Clone)]
pub struct Table1 {
    pub rows: Vec<Table1Row>,
}

/// Table 1 from `<runs>/<method>/features_{train,val}.safetensors` (as `just reproduce-table1`
/// writes them).
pub fn table1(runs: &Path) -> Result<Table1> {
    let mut rows = vec![];
    for (i, label, [train_path, val_path]) in
        methods_with(runs, ["features_train", "features_val"])?
    {
        let (train, _) = separation(&train_path)?;
        let (val, top1) = separation(&val_path)?;
        rows.push(Table1Row {
            label,
            paper: PAPER[i],
            train,
            val,
            top1: top1.unwrap_or(f64::NAN),
        });
    }
    Ok(Table1 { rows })
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

impl Table1 {
    fn row(&self, label: &str) -> Option<&Table1Row> {
        self.rows.iter().find(|r| r.label == label)
    }

    /// The table, the paper's values in parentheses, then the paper's claims on intra-class
    /// variation with a verdict each (when the baseline, LS and MaxSup rows are all present).
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_markdown(&mut md);
        md
    }

    fn write_markdown(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "| Method | Val top-1 | Intra-class var. (train) | Intra-class var. (val) | Inter-class sep. R² (train) | Inter-class sep. R² (val) |")?;
        writeln!(md, "|---|---|---|---|---|---|")?;
        for r in &self.rows {
            writeln!(
                md,
                "| {} | {:.2}% | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.4} ({:.4}) |",
                r.label,
                100.0 * r.top1,
                r.train.d_within,
                r.paper[0],
                r.val.d_within,
                r.paper[1],
                r.train.r2,
                r.paper[2],
                r.val.r2,
                r.paper[3]
            )?;
        }
        writeln!(md, "\nIn parentheses: the paper's values (ResNet-50 on ImageNet-1K, paper Table 1 / Table 14).")?;
        let (Some(ls), Some(ce), Some(ms)) = (
            self.row("Label Smoothing"),
            self.row("Baseline"),
            self.row("MaxSup"),
        ) else {
            return Ok(());
        };
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
        Ok(())
    }
}
