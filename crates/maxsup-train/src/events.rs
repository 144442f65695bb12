//! What the engine reports while it runs. The library never prints: binaries implement
//! [`Observer`] (a progress bar on the terminal) and [`JsonLinesLog`] records every event.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Statistics of one training epoch.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TrainStats {
    pub epoch: usize,
    pub loss: f64,
    /// Top-1 accuracy on the (augmented) training batches.
    pub accuracy: f64,
    /// Mean of the LS decomposition terms at this epoch's alpha (paper Eq. 5), for monitoring.
    pub ls_regularization: f64,
    pub ls_error_amplification: f64,
    pub alpha: f64,
    pub lr_last: f64,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// Time the step waited for the loader.
    pub loader_stall_seconds: f64,
    pub skipped_samples: usize,
}

/// Evaluation metrics on the validation/test split.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EvalStats {
    pub epoch: usize,
    pub samples: u64,
    pub top1: f64,
    pub top5: f64,
    pub nll: f64,
    pub ece15: f64,
    pub seconds: f64,
}

/// Progress of the run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    EpochStart {
        epoch: usize,
        epochs: usize,
        batches: usize,
        lr: f64,
        alpha: f64,
    },
    Step {
        epoch: usize,
        batch: usize,
        batches: usize,
        global_step: u64,
        loss: f64,
        lr: f64,
        images_per_second: f64,
    },
    Train(TrainStats),
    Eval(EvalStats),
    /// The evaluation of the EMA weights, after [`Event::Eval`] (runs with EMA only).
    EmaEval(EvalStats),
    /// In a data-parallel run, before each checkpoint: every rank's weights have this checksum.
    Replicas {
        epoch: usize,
        world_size: usize,
        checksum: String,
    },
    Checkpoint {
        epoch: usize,
        path: PathBuf,
        best: bool,
    },
}

/// Receives events as the engine produces them.
pub trait Observer {
    fn on_event(&mut self, event: &Event) -> Result<()>;
}

/// Ignores everything (library users and tests that only want the result).
pub struct Silent;

impl Observer for Silent {
    fn on_event(&mut self, _event: &Event) -> Result<()> {
        Ok(())
    }
}

/// Appends every event except per-step ones as a JSON line to a file (`log.jsonl` in the run
/// directory), so a resumed run continues the same log.
pub struct JsonLinesLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLinesLog {
    pub fn append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }
}

impl Observer for JsonLinesLog {
    fn on_event(&mut self, event: &Event) -> Result<()> {
        if matches!(event, Event::Step { .. }) {
            return Ok(());
        }
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.out
            .flush()
            .with_context(|| format!("writing log {}", self.path.display()))
    }
}

/// Sends each event to several observers.
pub struct Fanout<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Fanout<'_> {
    fn on_event(&mut self, event: &Event) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.on_event(event))
    }
}
