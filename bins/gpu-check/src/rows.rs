//! The rows of a phase, rewritten to its output file as each arrives: a phase that crashes or
//! runs past its time limit (a CUDA fault ends the process; `timeout` kills it) still leaves the
//! rows it measured, marked incomplete, for the report.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub struct Rows {
    rows: Vec<Value>,
    out: PathBuf,
    /// The key the rows are listed under in the file ("ops").
    key: &'static str,
}

impl Rows {
    pub fn new(out: &Path, key: &'static str) -> Self {
        Self {
            rows: Vec::new(),
            out: out.to_path_buf(),
            key,
        }
    }

    pub fn push(&mut self, row: Value) {
        self.rows.push(row);
        self.save();
    }

    pub fn extend(&mut self, rows: impl IntoIterator<Item = Value>) {
        self.rows.extend(rows);
        self.save();
    }

    pub fn all_pass(&self) -> bool {
        self.rows.iter().all(|r| r["pass"].as_bool() == Some(true))
    }

    pub fn into_inner(self) -> Vec<Value> {
        self.rows
    }

    /// The rows so far as `{"pass": false, "incomplete": true, KEY: [...]}`. A failed write
    /// only loses the progress copy: the phase's final write reports its own error.
    fn save(&self) {
        let partial = json!({"pass": false, "incomplete": true, self.key: self.rows});
        if let Ok(text) = serde_json::to_string_pretty(&partial) {
            let _ = std::fs::write(&self.out, text + "\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_reaches_the_file_marked_incomplete() {
        let dir = std::env::temp_dir().join(format!("gpu-check-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("ops.json");
        let mut rows = Rows::new(&out, "ops");
        rows.push(json!({"name": "a", "pass": true}));
        let read =
            || -> Value { serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap() };
        let v = read();
        assert_eq!(v["incomplete"], json!(true));
        assert_eq!(v["pass"], json!(false));
        assert_eq!(v["ops"].as_array().unwrap().len(), 1);
        rows.extend([
            json!({"name": "b", "pass": false}),
            json!({"name": "c", "pass": true}),
        ]);
        assert_eq!(read()["ops"].as_array().unwrap().len(), 3);
        assert!(!rows.all_pass());
        assert_eq!(rows.into_inner().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
