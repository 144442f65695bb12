//! Fashion-MNIST (Zalando, 2017) from its uncompressed IDX files, presented as 32x32 RGB.
//!
//! The linear-transfer experiment (paper Table 2) embeds the images with a network pretrained on
//! CIFAR-10, which expects 32x32 RGB. Fashion-MNIST images are 28x28 grayscale on a black (0)
//! background, so each image is **padded with 2 black pixels on every side** and the gray value is
//! copied to R, G and B. Padding is exact (every original pixel survives unchanged; no resampling
//! blur) and is the usual way 28x28 digits are fed to LeNet-style 32x32 inputs. Because the
//! background is already 0, the border is indistinguishable from the image's own margin.
//!
//! Files (installed by `data/fetch-fashion-mnist.sh`, which gunzips the Debian package's `.gz` files;
//! this crate reads the raw IDX bytes so it needs no gzip dependency):
//! * `train-images-idx3-ubyte` / `train-labels-idx1-ubyte`: 60,000 training samples;
//! * `t10k-images-idx3-ubyte` / `t10k-labels-idx1-ubyte`: 10,000 test samples.
//!
//! IDX layout (big-endian): images = magic `0x00000803`, count, rows, cols, then `count*rows*cols`
//! bytes; labels = magic `0x00000801`, count, then `count` bytes.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};

use crate::dataset::Dataset;
use crate::image::RgbImage;

/// Side of a stored Fashion-MNIST image.
pub const SOURCE_SIDE: usize = 28;
/// Black pixels added on each side so the image matches CIFAR's 32x32.
pub const PAD: usize = 2;
/// Side of the returned image.
pub const SIDE: usize = SOURCE_SIDE + 2 * PAD;
/// IDX magic of an unsigned-byte, 3-dimensional array (the image files).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of an unsigned-byte, 1-dimensional array (the label files).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const IMAGES_HEADER_BYTES: usize = 16;
const LABELS_HEADER_BYTES: usize = 8;
const PIXELS_PER_IMAGE: usize = SOURCE_SIDE * SOURCE_SIDE;

/// Which part of Fashion-MNIST to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FashionSplit {
    /// `train-*-ubyte`: 60,000 samples, 6,000 per class.
    Train,
    /// `t10k-*-ubyte`: 10,000 samples, 1,000 per class.
    Test,
}

impl FashionSplit {
    /// File name of this split's images (uncompressed IDX).
    pub fn images_file(self) -> &'static str {
        match self {
            FashionSplit::Train => "train-images-idx3-ubyte",
            FashionSplit::Test => "t10k-images-idx3-ubyte",
        }
    }

    /// File name of this split's labels (uncompressed IDX).
    pub fn labels_file(self) -> &'static str {
        match self {
            FashionSplit::Train => "train-labels-idx1-ubyte",
            FashionSplit::Test => "t10k-labels-idx1-ubyte",
        }
    }

    /// Number of samples in the official split; `open` rejects files with another count, so a
    /// swapped or partial file is caught before training.
    pub fn official_len(self) -> usize {
        match self {
            FashionSplit::Train => 60_000,
            FashionSplit::Test => 10_000,
        }
    }
}

/// One Fashion-MNIST split held fully in memory (47 MB for train): loading an image is a copy, so no
/// file I/O happens while training or extracting features.
pub struct FashionMnist {
    /// `len * 28 * 28` grayscale bytes, image after image, row-major.
    pixels: Vec<u8>,
    /// One label per image, each checked `< 10`.
    labels: Vec<u8>,
    images_path: PathBuf,
    split: Option<FashionSplit>,
}

impl FashionMnist {
    /// Class names in label order (from the Fashion-MNIST README).
    pub const CLASS_NAMES: [&'static str; 10] = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];

    /// Reads a split from `dir` (e.g. `data/fashion-mnist`). Besides the checks of
    /// [`FashionMnist::from_idx_files`], the sample count must be the official one for the split.
    /// Errors name the offending file and say how to install the data.
    pub fn open(dir: impl AsRef<Path>, split: FashionSplit) -> anyhow::Result<FashionMnist> {
        let dir = dir.as_ref();
        let mut ds = FashionMnist::from_idx_files(
            dir.join(split.images_file()),
            dir.join(split.labels_file()),
        )?;
        ensure!(
            ds.len() == split.official_len(),
            "{} holds {} images, expected {} for the {:?} split (re-run data/fetch-fashion-mnist.sh)",
            ds.images_path.display(),
            ds.len(),
            split.official_len(),
            split
        );
        ds.split = Some(split);
        Ok(ds)
    }

    /// Reads any pair of uncompressed IDX files (e.g. a subset). Checks the magic numbers, 28x28
    /// image size, that both files hold the same count, that neither is truncated or has trailing
    /// bytes, and that every label is `< 10`.
    pub fn from_idx_files(
        images_path: impl Into<PathBuf>,
        labels_path: impl Into<PathBuf>,
    ) -> anyhow::Result<FashionMnist> {
        let (images_path, labels_path) = (images_path.into(), labels_path.into());
        let images = read_idx_file(&images_path)?;
        let labels = read_idx_file(&labels_path)?;
        let image_count = parse_images(&images, &images_path)?;
        let label_count = parse_labels(&labels, &labels_path)?;
        ensure!(
            image_count == label_count,
            "{} holds {} images but {} holds {} labels",
            images_path.display(),
            image_count,
            labels_path.display(),
            label_count
        );
        let pixels = images[IMAGES_HEADER_BYTES..].to_vec();
        let labels = labels[LABELS_HEADER_BYTES..].to_vec();
        Ok(FashionMnist {
            pixels,
            labels,
            images_path,
            split: None,
        })
    }

    /// The split this dataset was opened as (`None` when built with `from_idx_files`).
    pub fn split(&self) -> Option<FashionSplit> {
        self.split
    }

    /// The 784 original grayscale bytes (28x28, row-major) of sample `index`.
    pub fn raw_image(&self, index: usize) -> &[u8] {
        &self.pixels[index * PIXELS_PER_IMAGE..(index + 1) * PIXELS_PER_IMAGE]
    }

    /// Sample `index` as 32x32 RGB: gray copied to the three channels, 2 black pixels of padding on
    /// every side (see the module docs for why padding rather than resizing).
    pub fn image(&self, index: usize) -> RgbImage {
        let raw = self.raw_image(index);
        let mut data = vec![0u8; SIDE * SIDE * 3];
        for (y, row) in raw.chunks_exact(SOURCE_SIDE).enumerate() {
            let start = ((y + PAD) * SIDE + PAD) * 3;
            for (dst, &gray) in data[start..start + SOURCE_SIDE * 3]
                .chunks_exact_mut(3)
                .zip(row)
            {
                dst.fill(gray);
            }
        }
        RgbImage {
            width: SIDE,
            height: SIDE,
            data,
        }
    }
}

/// Reads a whole IDX file, explaining the two usual mistakes: the file is absent, or it is still
/// the gzipped download.
fn read_idx_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    // The largest Fashion-MNIST file (training images) has 47,040,016 bytes.
    const MAX_IDX_BYTES: u64 = 64 << 20;
    let bytes = crate::bounded_read::read_at_most(path, MAX_IDX_BYTES, "Fashion-MNIST file")
        .with_context(|| {
            let gz = path.with_file_name(format!(
                "{}.gz",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            let hint = if gz.exists() {
                format!(
                    " ({} exists: gunzip it, or run data/fetch-fashion-mnist.sh)",
                    gz.display()
                )
            } else {
                " (run data/fetch-fashion-mnist.sh to install the dataset)".to_string()
            };
            format!("cannot read Fashion-MNIST file {}{}", path.display(), hint)
        })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        bail!(
            "{} is gzip-compressed; gunzip it first (data/fetch-fashion-mnist.sh does)",
            path.display()
        );
    }
    Ok(bytes)
}

/// Big-endian u32 at `offset`; callers have checked the header length.
fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

/// Checks the IDX header's magic number, then its length. The magic comes first so that a wrong file
/// (e.g. a short labels file given as images) is reported as wrong, not as truncated.
fn check_header(
    bytes: &[u8],
    path: &Path,
    header_bytes: usize,
    magic: u32,
    kind: &str,
) -> anyhow::Result<()> {
    if bytes.len() >= 4 {
        let found = be_u32(bytes, 0);
        ensure!(
            found == magic,
            "{} has magic number 0x{:08x}, expected 0x{:08x} (IDX {}): not a Fashion-MNIST {} file",
            path.display(),
            found,
            magic,
            kind,
            kind
        );
    }
    ensure!(
        bytes.len() >= header_bytes,
        "{} has {} bytes, shorter than the {}-byte IDX {} header: the file is truncated",
        path.display(),
        bytes.len(),
        header_bytes,
        kind
    );
    Ok(())
}

/// Checks that the payload after the header is exactly `expected` bytes.
fn check_payload(
    bytes: &[u8],
    path: &Path,
    header_bytes: usize,
    expected: usize,
    count: usize,
) -> anyhow::Result<()> {
    let payload = bytes.len() - header_bytes;
    if payload < expected {
        bail!(
            "{} is truncated: its header announces {} samples ({} bytes after the header) but only {} bytes follow",
            path.display(),
            count,
            expected,
            payload
        );
    }
    ensure!(
        payload == expected,
        "{} has {} trailing bytes after the {} samples its header announces",
        path.display(),
        payload - expected,
        count
    );
    Ok(())
}

/// Validates an image file and returns its sample count.
fn parse_images(bytes: &[u8], path: &Path) -> anyhow::Result<usize> {
    check_header(bytes, path, IMAGES_HEADER_BYTES, IMAGES_MAGIC, "images")?;
    let count = be_u32(bytes, 4) as usize;
    let (rows, cols) = (be_u32(bytes, 8) as usize, be_u32(bytes, 12) as usize);
    ensure!(
        rows == SOURCE_SIDE && cols == SOURCE_SIDE,
        "{} holds {}x{} images, expected {}x{}",
        path.display(),
        rows,
        cols,
        SOURCE_SIDE,
        SOURCE_SIDE
    );
    let expected = count
        .checked_mul(PIXELS_PER_IMAGE)
        .with_context(|| format!("{}: count {} overflows", path.display(), count))?;
    check_payload(bytes, path, IMAGES_HEADER_BYTES, expected, count)?;
    Ok(count)
}

/// Validates a label file (including every label `< 10`) and returns its sample count.
fn parse_labels(bytes: &[u8], path: &Path) -> anyhow::Result<usize> {
    check_header(bytes, path, LABELS_HEADER_BYTES, LABELS_MAGIC, "labels")?;
    let count = be_u32(bytes, 4) as usize;
    check_payload(bytes, path, LABELS_HEADER_BYTES, count, count)?;
    let classes = FashionMnist::CLASS_NAMES.len();
    if let Some((i, &label)) = bytes[LABELS_HEADER_BYTES..]
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        bail!(
            "{}: sample {} has label {}, expected 0..={}",
            path.display(),
            i,
            label,
            classes - 1
        );
    }
    Ok(count)
}

impl Dataset for FashionMnist {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn num_classes(&self) -> usize {
        FashionMnist::CLASS_NAMES.len()
    }

    fn label(&self, index: usize) -> u32 {
        self.labels[index] as u32
    }

    fn name(&self, index: usize) -> String {
        format!("{} image {}", self.images_path.display(), index)
    }

    fn load(&self, index: usize) -> anyhow::Result<RgbImage> {
        ensure!(
            index < self.len(),
            "Fashion-MNIST index {} out of range (len {})",
            index,
            self.len()
        );
        Ok(self.image(index))
    }
}
