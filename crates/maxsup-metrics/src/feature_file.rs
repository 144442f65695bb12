//! The feature-file format shared by the extractor and the metrics: one safetensors file with
//! `features` [N, D] F32 (penultimate activations), `logits` [N, K] F32 and `labels` [N] I64.
//!
//! Both sides stream: the writer fills a pre-sized file batch by batch (the extractor never holds
//! all activations), the reader memory-maps the file and copies out one row range at a time, so a
//! 10^6 x 2048 feature file is processed in O(batch) memory.

use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Tensor names inside a feature file.
pub const FEATURES: &str = "features";
/// Tensor names inside a feature file.
pub const LOGITS: &str = "logits";
/// Tensor names inside a feature file.
pub const LABELS: &str = "labels";

/// A block of consecutive rows: `features` is row-major [rows, D], `logits` [rows, K].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureBatch {
    pub features: Vec<f32>,
    pub logits: Vec<f32>,
    pub labels: Vec<i64>,
}

impl FeatureBatch {
    /// Number of samples in the batch.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// Converts stored i64 labels to class indices, rejecting negative or absurdly large values
/// (a corrupt label would otherwise silently allocate billions of classes).
pub fn labels_to_classes(labels: &[i64]) -> Result<Vec<u32>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            ensure!(
                (0..=i64::from(u32::MAX / 2)).contains(&y),
                "label {y} at row {i} is not a class index (expected 0 <= label < 2^31)"
            );
            Ok(y as u32)
        })
        .collect()
}

/// Streams a feature file to disk: the header is written up front for a known sample count `n`,
/// then each `push` writes its rows straight into the three tensor regions.
///
/// The rows go to `<path>.partial`, renamed over `path` by [`FeatureFileWriter::finish`]: a run
/// that fails half-way leaves any earlier file at `path` as it was, and never a half-written one
/// (the partial file is removed when the writer is dropped unfinished).
pub struct FeatureFileWriter {
    path: PathBuf,
    partial: PathBuf,
    finished: bool,
    file: File,
    n: usize,
    d: usize,
    k: usize,
    written: usize,
    data_start: u64,
}

impl FeatureFileWriter {
    /// Creates (truncates) `path` for `n` samples with `d` features and `k` logits each.
    pub fn create(path: impl AsRef<Path>, n: usize, d: usize, k: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        ensure!(
            d > 0,
            "feature file {}: D={d} must be positive",
            path.display()
        );
        let (f_end, l_end, y_end) = (
            n * d * 4,
            n * d * 4 + n * k * 4,
            n * d * 4 + n * k * 4 + n * 8,
        );
        // K = 0: features and labels only (e.g. a transfer split whose classes are not the
        // model's), and no `logits` tensor at all.
        let mut header = serde_json::json!({
            FEATURES: {"dtype": "F32", "shape": [n, d], "data_offsets": [0, f_end]},
            LABELS: {"dtype": "I64", "shape": [n], "data_offsets": [l_end, y_end]},
        });
        if k > 0 {
            header[LOGITS] = serde_json::json!({"dtype": "F32", "shape": [n, k], "data_offsets": [f_end, l_end]});
        }
        let mut header = serde_json::to_string(&header)?.into_bytes();
        // safetensors recommends 8-byte alignment of the data section; pad with spaces.
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut file = File::create(&partial)
            .with_context(|| format!("creating feature file {}", partial.display()))?;
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(&header)?;
        let data_start = 8 + header.len() as u64;
        file.set_len(data_start + y_end as u64)
            .with_context(|| format!("sizing feature file {}", path.display()))?;
        Ok(Self {
            path,
            partial,
            finished: false,
            file,
            n,
            d,
            k,
            written: 0,
            data_start,
        })
    }

    /// Appends `rows = labels.len()` samples; `features` is [rows, D], `logits` [rows, K].
    pub fn push(&mut self, features: &[f32], logits: &[f32], labels: &[i64]) -> Result<()> {
        let rows = labels.len();
        let p = self.path.display();
        ensure!(
            features.len() == rows * self.d,
            "feature file {p}: batch has {} feature values, expected {rows} x {}",
            features.len(),
            self.d
        );
        ensure!(
            logits.len() == rows * self.k,
            "feature file {p}: batch has {} logit values, expected {rows} x {}",
            logits.len(),
            self.k
        );
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            bail!(
                "feature file {p}: row {} has a non-finite feature ({}); nothing was written",
                self.written + i / self.d,
                features[i]
            );
        }
        if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
            bail!(
                "feature file {p}: row {} has a non-finite logit ({}); nothing was written",
                self.written + i / self.k,
                logits[i]
            );
        }
        ensure!(
            self.written + rows <= self.n,
            "feature file {p}: pushing {rows} rows after {} exceeds the declared {} samples",
            self.written,
            self.n
        );
        let (n, d, k, w) = (
            self.n as u64,
            self.d as u64,
            self.k as u64,
            self.written as u64,
        );
        self.write_at(
            self.data_start + w * d * 4,
            features.iter().flat_map(|v| v.to_le_bytes()),
        )?;
        self.write_at(
            self.data_start + n * d * 4 + w * k * 4,
            logits.iter().flat_map(|v| v.to_le_bytes()),
        )?;
        self.write_at(
            self.data_start + n * (d + k) * 4 + w * 8,
            labels.iter().flat_map(|v| v.to_le_bytes()),
        )?;
        self.written += rows;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bytes: impl Iterator<Item = u8>) -> Result<()> {
        let bytes: Vec<u8> = bytes.collect();
        self.file.seek(SeekFrom::Start(offset))?;
        self.file
            .write_all(&bytes)
            .with_context(|| format!("writing feature file {}", self.partial.display()))
    }

    /// Checks that exactly the declared number of samples was written and flushes the file.
    pub fn finish(mut self) -> Result<()> {
        ensure!(
            self.written == self.n,
            "feature file {}: {} samples written but {} declared",
            self.path.display(),
            self.written,
            self.n
        );
        self.file.flush()?;
        self.file
            .sync_all()
            .with_context(|| format!("writing feature file {}", self.partial.display()))?;
        std::fs::rename(&self.partial, &self.path).with_context(|| {
            format!(
                "moving {} to {}",
                self.partial.display(),
                self.path.display()
            )
        })?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for FeatureFileWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Writes a whole in-memory batch as a feature file (tests, small tools).
pub fn write_feature_file(
    path: impl AsRef<Path>,
    d: usize,
    k: usize,
    batch: &FeatureBatch,
) -> Result<()> {
    let mut w = FeatureFileWriter::create(path, batch.rows(), d, k)?;
    w.push(&batch.features, &batch.logits, &batch.labels)?;
    w.finish()
}

/// A memory-mapped feature file; rows are decoded on demand.
pub struct FeatureFile {
    path: PathBuf,
    map: memmap2::Mmap,
    n: usize,
    d: usize,
    k: usize,
    features_at: usize,
    logits_at: usize,
    labels_at: usize,
}

impl FeatureFile {
    /// Opens and validates `path` (names, dtypes and shapes of the three tensors).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.display().to_string();
        let file = File::open(&path).with_context(|| format!("opening feature file {p}"))?;
        // SAFETY: the map is read-only; like every mmap reader we assume nobody truncates the file
        // while it is open (the extractor writes to a different path before we run).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping feature file {p}"))?;
        let st = safetensors::SafeTensors::deserialize(&map)
            .with_context(|| format!("feature file {p} is not a valid safetensors file"))?;
        let base = map.as_ptr() as usize;
        let tensor = |name: &str,
                      dtype: safetensors::Dtype,
                      rank: usize|
         -> Result<(Vec<usize>, usize)> {
            let t = st
                .tensor(name)
                .with_context(|| format!("feature file {p} has no tensor `{name}`"))?;
            if t.dtype() != dtype || t.shape().len() != rank {
                bail!(
                    "feature file {p}: tensor `{name}` is {:?} {:?}, expected {dtype:?} of rank {rank}",
                    t.dtype(),
                    t.shape()
                );
            }
            Ok((t.shape().to_vec(), t.data().as_ptr() as usize - base))
        };
        let (fs, features_at) = tensor(FEATURES, safetensors::Dtype::F32, 2)?;
        let (ys, labels_at) = tensor(LABELS, safetensors::Dtype::I64, 1)?;
        let n = ys[0];
        // Logits are optional: Table 1's metrics and the probe use features and labels only
        // (files written by PyTorch often have nothing else).
        let has_logits = st.names().contains(&LOGITS);
        let (ls, logits_at) = if has_logits {
            tensor(LOGITS, safetensors::Dtype::F32, 2)?
        } else {
            (vec![n, 0], 0)
        };
        ensure!(n > 0, "feature file {p} has no samples");
        ensure!(
            fs[0] == n && ls[0] == n,
            "feature file {p}: row counts differ (features {}, logits {}, labels {n})",
            fs[0],
            ls[0]
        );
        ensure!(
            fs[1] > 0,
            "feature file {p}: empty feature dimension ({})",
            fs[1]
        );
        ensure!(
            !has_logits || ls[1] > 0,
            "feature file {p}: empty logit dimension"
        );
        Ok(Self {
            d: fs[1],
            k: ls[1],
            n,
            path,
            map,
            features_at,
            logits_at,
            labels_at,
        })
    }

    /// Number of samples N.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the file holds no samples.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Feature dimension D.
    pub fn feature_dim(&self) -> usize {
        self.d
    }

    /// Number of logits K per sample (0 when the file has none).
    pub fn num_logits(&self) -> usize {
        self.k
    }

    /// K, or an error saying that `what` needs the logits this file lacks.
    pub fn require_logits(&self, what: &str) -> Result<usize> {
        ensure!(
            self.k > 0,
            "feature file {} has no logits (features and labels only); {what} needs them: \
             extract with the model whose classes the labels are",
            self.path.display()
        );
        Ok(self.k)
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes rows `start..end`.
    pub fn read_rows(&self, start: usize, end: usize) -> Result<FeatureBatch> {
        ensure!(
            start <= end && end <= self.n,
            "feature file {}: row range {start}..{end} outside 0..{}",
            self.path.display(),
            self.n
        );
        let f32s = |at: usize, width: usize| -> Vec<f32> {
            let bytes = &self.map[at + start * width * 4..at + end * width * 4];
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let labels = self.map[self.labels_at + start * 8..self.labels_at + end * 8]
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let batch = FeatureBatch {
            features: f32s(self.features_at, self.d),
            logits: f32s(self.logits_at, self.k),
            labels,
        };
        // One NaN would silently turn every downstream statistic (or the probe) into garbage.
        for (name, values, width) in [
            ("features", &batch.features, self.d),
            ("logits", &batch.logits, self.k),
        ] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!(
                    "feature file {}: {name} of row {} hold a non-finite value ({})",
                    self.path.display(),
                    start + i / width.max(1),
                    values[i]
                );
            }
        }
        Ok(batch)
    }

    /// Iterates over consecutive batches of at most `batch_rows` rows.
    pub fn batches(&self, batch_rows: usize) -> impl Iterator<Item = Result<FeatureBatch>> + '_ {
        let step = batch_rows.max(1);
        (0..self.n)
            .step_by(step)
            .map(move |s| self.read_rows(s, (s + step).min(self.n)))
    }

    /// Decodes the whole file.
    pub fn read_all(&self) -> Result<FeatureBatch> {
        self.read_rows(0, self.n)
    }
}
