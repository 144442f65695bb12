//! The interface every dataset implements, so the loader does not care where images come from.

use crate::image::RgbImage;

/// A labelled, indexable image collection.
///
/// Implementations are shared between the loader's worker threads, hence `Send + Sync`.
/// `load` must return an error (never a placeholder image) when a sample cannot be read or decoded;
/// the error names the file / member so the user can fix the data.
pub trait Dataset: Send + Sync {
    /// Number of samples (the full dataset, before sharding).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes K; labels are in `0..K`.
    fn num_classes(&self) -> usize;

    /// The label of sample `index` (cheap: no decoding).
    fn label(&self, index: usize) -> u32;

    /// A human-readable name of sample `index` (file path, zip member, record number) for messages.
    fn name(&self, index: usize) -> String;

    /// Reads and decodes sample `index` to RGB.
    fn load(&self, index: usize) -> anyhow::Result<RgbImage>;

    /// Reads sample `index` as stored. Datasets of encoded files return the bytes, so a pipeline
    /// that crops can decode only the crop (see `Pipeline::apply_raw_into`); the default decodes.
    fn load_raw(&self, index: usize) -> anyhow::Result<RawSample> {
        self.load(index).map(RawSample::Decoded)
    }
}

/// A sample as a dataset stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawSample {
    /// An encoded JPEG or PNG file.
    Encoded(Vec<u8>),
    /// Pixels (CIFAR-10, Fashion-MNIST records).
    Decoded(RgbImage),
}
