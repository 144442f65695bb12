//! CIFAR-10 in its official binary form (`cifar-10-batches-bin`).
//!
//! Each `*.bin` file holds 10,000 records of 3,073 bytes: one label byte (0..=9), then the 32x32 red
//! plane, green plane and blue plane, each row-major. The training split is `data_batch_1..5.bin`
//! (50,000 images), the test split `test_batch.bin` (10,000 images).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::dataset::Dataset;
use crate::image::RgbImage;

/// Bytes per record: 1 label + 3 * 32 * 32 pixels.
pub const RECORD_BYTES: usize = 3073;
/// Records per official batch file.
pub const RECORDS_PER_BATCH: usize = 10_000;
/// Side of a CIFAR image.
pub const SIDE: usize = 32;
/// Class names in label order (from `batches.meta.txt`).
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which part of CIFAR-10 to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarSplit {
    /// `data_batch_1.bin` .. `data_batch_5.bin`: 50,000 images.
    Train,
    /// `test_batch.bin`: 10,000 images.
    Test,
}

impl CifarSplit {
    /// The batch files of this split, in order.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            CifarSplit::Train => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            CifarSplit::Test => &["test_batch.bin"],
        }
    }
}

/// One CIFAR-10 split held fully in memory (150 MB for train): decoding is a copy, so no file I/O
/// happens while training.
pub struct Cifar10 {
    /// Concatenated records of all batch files of the split.
    records: Vec<u8>,
    dir: PathBuf,
    split: CifarSplit,
}

impl Cifar10 {
    /// Reads a split from `dir` (the `cifar-10-batches-bin` directory). Errors name the missing or
    /// truncated file and say how to fetch the data.
    pub fn open(dir: impl AsRef<Path>, split: CifarSplit) -> anyhow::Result<Cifar10> {
        let dir = dir.as_ref().to_path_buf();
        let mut records =
            Vec::with_capacity(split.files().len() * RECORDS_PER_BATCH * RECORD_BYTES);
        for file in split.files() {
            let path = dir.join(file);
            // One byte over the expected size is enough to report a wrong size by name.
            let limit = (RECORDS_PER_BATCH * RECORD_BYTES) as u64 + 1;
            let bytes = crate::bounded_read::read_at_most(&path, limit, "CIFAR-10 batch")
                .with_context(|| {
                    format!(
                        "cannot use CIFAR-10 batch {} (run data/fetch-cifar10.sh to install the dataset)",
                        path.display()
                    )
                })?;
            validate_batch(&bytes, &path)?;
            records.extend_from_slice(&bytes);
        }
        Ok(Cifar10 {
            records,
            dir,
            split,
        })
    }

    /// Builds a dataset from raw records (e.g. a subset); `origin` is used in messages.
    pub fn from_records(records: Vec<u8>, origin: impl Into<PathBuf>) -> anyhow::Result<Cifar10> {
        let origin = origin.into();
        validate_records(&records, &origin)?;
        Ok(Cifar10 {
            records,
            dir: origin,
            split: CifarSplit::Test,
        })
    }

    pub fn split(&self) -> CifarSplit {
        self.split
    }

    /// The raw 3,073-byte record of sample `index`.
    pub fn record(&self, index: usize) -> &[u8] {
        &self.records[index * RECORD_BYTES..(index + 1) * RECORD_BYTES]
    }

    /// The image of sample `index` (planar CHW in the file, returned as interleaved RGB).
    pub fn image(&self, index: usize) -> RgbImage {
        let rec = self.record(index);
        let plane = SIDE * SIDE;
        let (r, g, b) = (
            &rec[1..1 + plane],
            &rec[1 + plane..1 + 2 * plane],
            &rec[1 + 2 * plane..],
        );
        let mut data = Vec::with_capacity(plane * 3);
        for i in 0..plane {
            data.extend_from_slice(&[r[i], g[i], b[i]]);
        }
        RgbImage {
            width: SIDE,
            height: SIDE,
            data,
        }
    }
}

fn validate_batch(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
    if bytes.len() != RECORDS_PER_BATCH * RECORD_BYTES {
        bail!(
            "CIFAR-10 batch {} has {} bytes, expected {} ({} records of {} bytes): the file is truncated or \
             not a CIFAR-10 batch (re-run data/fetch-cifar10.sh)",
            path.display(),
            bytes.len(),
            RECORDS_PER_BATCH * RECORD_BYTES,
            RECORDS_PER_BATCH,
            RECORD_BYTES
        );
    }
    validate_records(bytes, path)
}

fn validate_records(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        bail!(
            "{}: {} bytes is not a whole number of {}-byte records",
            path.display(),
            bytes.len(),
            RECORD_BYTES
        );
    }
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        if rec[0] as usize >= CLASS_NAMES.len() {
            bail!(
                "{}: record {} has label {}, expected 0..=9",
                path.display(),
                i,
                rec[0]
            );
        }
    }
    Ok(())
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / RECORD_BYTES
    }

    fn num_classes(&self) -> usize {
        CLASS_NAMES.len()
    }

    fn label(&self, index: usize) -> u32 {
        self.record(index)[0] as u32
    }

    fn name(&self, index: usize) -> String {
        let per_file = index / RECORDS_PER_BATCH;
        match self.split.files().get(per_file) {
            Some(f)
                if self
                    .records
                    .len()
                    .is_multiple_of(RECORDS_PER_BATCH * RECORD_BYTES) =>
            {
                format!(
                    "{} record {}",
                    self.dir.join(f).display(),
                    index % RECORDS_PER_BATCH
                )
            }
            _ => format!("{} record {}", self.dir.display(), index),
        }
    }

    fn load(&self, index: usize) -> anyhow::Result<RgbImage> {
        anyhow::ensure!(
            index < self.len(),
            "CIFAR-10 index {} out of range (len {})",
            index,
            self.len()
        );
        Ok(self.image(index))
    }
}
