//! The paper's tables from the feature files of a set of runs, beside the paper's numbers, and
//! the qualitative claims checked on them. A run directory holds one sub-directory per method
//! ([`METHODS`]); methods without their files are left out of the table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

mod table1;
mod table2;

pub use table1::{table1, Table1, Table1Row};
pub use table2::{table2, Table2, Table2Row};

/// The methods in the paper's row order: directory name and row label.
pub const METHODS: [(&str, &str); 6] = [
    ("ce", "Baseline"),
    ("ls", "Label Smoothing"),
    ("ols", "Online LS"),
    ("zipf", "Zipf's LS"),
    ("maxsup", "MaxSup"),
    ("lp", "Logit Penalty"),
];

/// The methods under `runs` that have both `files` (`<runs>/<method>/<file>.safetensors`), in
/// the paper's order: their index in [`METHODS`], row label and the two paths. An error naming
/// `runs` and the files when none has them.
fn methods_with(runs: &Path, files: [&str; 2]) -> Result<Vec<(usize, &'static str, [PathBuf; 2])>> {
    let found: Vec<_> = METHODS
        .iter()
        .enumerate()
        .filter_map(|(i, (dir, label))| {
            let paths = files.map(|f| runs.join(dir).join(format!("{f}.safetensors")));
            paths
                .iter()
                .all(|p| p.exists())
                .then_some((i, *label, paths))
        })
        .collect();
    if found.is_empty() {
        bail!(
            "no run in {} has {}/{}.safetensors",
            runs.display(),
            files[0],
            files[1].rsplit('_').next().unwrap_or(files[1])
        );
    }
    Ok(found)
}

/// How the runs behind a table were trained, from each method's `config.json`: one line when
/// every run shares the description (they differ only in the loss, as the paper's tables
/// require), else one line per method; a method without a readable config says so.
pub fn describe_runs(runs: &Path) -> Vec<String> {
    let described: Vec<(&str, String)> = METHODS
        .iter()
        .filter(|(dir, _)| runs.join(dir).is_dir())
        .map(|(dir, label)| {
            let line = match maxsup_train::TrainConfig::read_run_config(&runs.join(dir)) {
                Ok(c) => c.describe(),
                Err(e) => format!("no configuration ({e:#})"),
            };
            (*label, line)
        })
        .collect();
    match described.first() {
        Some((_, first)) if described.iter().all(|(_, d)| d == first) => {
            vec![format!("Every run: {first}; only the loss differs.")]
        }
        _ => described
            .into_iter()
            .map(|(label, d)| format!("{label}: {d}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxsup_train::{TrainConfig, CONFIG_FILE};

    fn save(runs: &Path, method: &str, c: &TrainConfig) {
        std::fs::create_dir_all(runs.join(method)).unwrap();
        std::fs::write(
            runs.join(method).join(CONFIG_FILE),
            serde_json::to_vec(c).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn runs_that_differ_only_in_the_loss_are_described_once_else_per_method() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path();
        let mut c = TrainConfig::preset("cifar10-resnet18").unwrap();
        for (method, loss) in [("ce", "ce"), ("maxsup", "maxsup")] {
            c.loss = loss.parse().unwrap();
            c.out_dir = runs.join(method);
            save(runs, method, &c);
        }
        let lines = describe_runs(runs);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("Every run: recipe `cifar10-resnet18`"),
            "{lines:?}"
        );

        c.epochs = 3;
        save(runs, "maxsup", &c);
        std::fs::create_dir_all(runs.join("ls")).unwrap();
        let lines = describe_runs(runs);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("Baseline: recipe") && lines[0].contains("15 epochs"));
        assert!(lines[1].starts_with("Label Smoothing: no configuration (reading "));
        assert!(lines[2].starts_with("MaxSup: recipe") && lines[2].contains("3 epochs"));
    }
}
