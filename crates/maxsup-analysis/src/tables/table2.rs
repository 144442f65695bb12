//! Table 2 (the paper's Table 3): linear transfer. For each pretrained run, a multinomial
//! logistic regression (L2, L-BFGS, lambda chosen among 45 log-spaced values on a held-out split)
//! is fitted on frozen features of a second dataset and scored on its test split.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use maxsup_metrics::{labels_to_classes, run_probe, FeatureFile, ProbeConfig, ProbeData};

use super::methods_with;

/// The paper's accuracy per method in [`super::METHODS`] order (ResNet-50 ImageNet features probed on
/// CIFAR-10, paper Table 3), where it reports one.
const PAPER: [Option<f64>; 6] = [
    Some(0.814),
    Some(0.746),
    None,
    None,
    Some(0.810),
    Some(0.724),
];

/// One method's probe result and the paper's.
#[derive(Debug, Clone)]
pub struct Table2Row {
    pub label: &'static str,
    pub paper: Option<f64>,
    pub test_accuracy: f64,
    pub chosen_lambda: f64,
}

/// The measured table.
#[derive(Debug, Clone)]
pub struct Table2 {
    pub rows: Vec<Table2Row>,
}

/// Table 2 from `<runs>/<method>/transfer_{train,test}.safetensors` (as `just
/// reproduce-table2` writes them).
pub fn table2(runs: &Path) -> Result<Table2> {
    let mut rows = vec![];
    for (i, label, [train, test]) in methods_with(runs, ["transfer_train", "transfer_test"])? {
        let report = run_probe(
            probe_data(&train)?,
            probe_data(&test)?,
            &ProbeConfig::default(),
        )?;
        rows.push(Table2Row {
            label,
            paper: PAPER[i],
            test_accuracy: report.test_accuracy,
            chosen_lambda: report.chosen_lambda,
        });
    }
    Ok(Table2 { rows })
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

impl Table2 {
    /// The table with the paper's accuracy beside each row.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        md.push_str("| Pretraining loss | Linear-probe test accuracy | chosen λ | paper (ImageNet → CIFAR-10) |\n");
        md.push_str("|---|---|---|---|\n");
        for r in &self.rows {
            let paper = r
                .paper
                .map_or("–".to_string(), |p| format!("{:.1}%", 100.0 * p));
            // Writing to a String cannot fail.
            let _ = writeln!(
                md,
                "| {} | {:.2}% | {:.3e} | {paper} |",
                r.label,
                100.0 * r.test_accuracy,
                r.chosen_lambda
            );
        }
        md
    }
}
