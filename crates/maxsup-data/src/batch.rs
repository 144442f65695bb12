//! What the loader hands to the training loop.

use std::borrow::Cow;

use crate::normalize::normalize_planes;

/// One mini-batch as plain host buffers, ready to be wrapped in tensors of any framework.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// NCHW images, `shape[0] * shape[1] * shape[2] * shape[3]` values.
    pub images: BatchImages,
    /// `[B, 3, H, W]`.
    pub shape: [usize; 4],
    /// Hard labels, `B` values in `0..num_classes` (the first-sample labels under Mixup/CutMix).
    pub labels: Vec<u32>,
    /// `[B, num_classes]` row-major soft targets when Mixup/CutMix is active, else `None`.
    pub soft_targets: Option<Vec<f32>>,
    pub num_classes: usize,
    /// Dataset indices of the samples, in batch order.
    pub indices: Vec<usize>,
}

/// A batch's NCHW images, in one of the two forms a loader produces
/// ([`LoaderConfig::pixels`](crate::LoaderConfig)).
#[derive(Clone, Debug, PartialEq)]
pub enum BatchImages {
    /// Normalized `f32` values, ready for a model.
    Normalized(Vec<f32>),
    /// The 8-bit pixels before normalization: a quarter of the bytes to copy to a GPU, which
    /// applies `(v / 255 - mean[c]) / std[c]` there.
    Pixels {
        values: Vec<u8>,
        mean: [f32; 3],
        std: [f32; 3],
    },
}

impl BatchImages {
    /// Number of values (pixels times channels).
    pub fn len(&self) -> usize {
        match self {
            BatchImages::Normalized(v) => v.len(),
            BatchImages::Pixels { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Number of values per image (`3 * H * W`).
    pub fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// The normalized images: borrowed, or computed from the pixels with the loader's own
    /// arithmetic (bit-identical to the normalized batch of the same samples).
    pub fn normalized_images(&self) -> Cow<'_, [f32]> {
        match &self.images {
            BatchImages::Normalized(v) => Cow::Borrowed(v),
            BatchImages::Pixels { values, mean, std } => {
                let mut out = vec![0f32; values.len()];
                let per = self.image_len().max(1);
                for (planes, out) in values.chunks(per).zip(out.chunks_mut(per)) {
                    normalize_planes(planes, *mean, *std, out);
                }
                Cow::Owned(out)
            }
        }
    }
}
