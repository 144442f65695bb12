//! DeiT architecture descriptions.

/// A timm `VisionTransformer` as DeiT uses it: qkv bias, LayerNorm eps 1e-6, MLP ratio 4, GELU,
/// CLS-token pooling after the final norm, linear stochastic-depth schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct DeiTConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: usize,
    pub num_classes: usize,
    /// Drop-path rate of the last block; block i gets `rate * i / (depth - 1)`.
    pub drop_path_rate: f64,
}

impl DeiTConfig {
    fn base(
        embed_dim: usize,
        num_heads: usize,
        img_size: usize,
        patch_size: usize,
        num_classes: usize,
    ) -> Self {
        Self {
            img_size,
            patch_size,
            embed_dim,
            depth: 12,
            num_heads,
            mlp_ratio: 4,
            num_classes,
            drop_path_rate: 0.0,
        }
    }

    /// DeiT-Tiny: embed 192, 12 blocks, 3 heads.
    pub fn tiny(img_size: usize, patch_size: usize, num_classes: usize) -> Self {
        Self::base(192, 3, img_size, patch_size, num_classes)
    }
    /// DeiT-Small: embed 384, 12 blocks, 6 heads.
    pub fn small(img_size: usize, patch_size: usize, num_classes: usize) -> Self {
        Self::base(384, 6, img_size, patch_size, num_classes)
    }
    /// DeiT-Base: embed 768, 12 blocks, 12 heads.
    pub fn base_model(img_size: usize, patch_size: usize, num_classes: usize) -> Self {
        Self::base(768, 12, img_size, patch_size, num_classes)
    }

    /// Number of patch tokens N (the sequence is 1 + N long with the CLS token).
    pub fn num_patches(&self) -> usize {
        (self.img_size / self.patch_size).pow(2)
    }

    /// Checks the geometry is consistent.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            anyhow::bail!(
                "DeiT img_size {} must be a multiple of patch_size {}",
                self.img_size,
                self.patch_size
            );
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            anyhow::bail!(
                "DeiT embed_dim {} must be divisible by num_heads {}",
                self.embed_dim,
                self.num_heads
            );
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            anyhow::bail!(
                "drop_path_rate must be in [0, 1), got {}",
                self.drop_path_rate
            );
        }
        Ok(())
    }
}
