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
