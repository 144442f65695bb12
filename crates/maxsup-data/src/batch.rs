//! What the loader hands to the training loop.

/// One mini-batch as plain host buffers, ready to be wrapped in tensors of any framework.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// NCHW images, `shape[0] * shape[1] * shape[2] * shape[3]` values, normalized.
    pub images: Vec<f32>,
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

impl Batch {
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Number of `f32` values per image.
    pub fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }
}
