//! ResNet architecture descriptions.

use anyhow::{bail, Result};

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34 and the CIFAR ResNet-20/32/56), expansion 1.
    Basic,
    /// 1x1, 3x3 (strided), 1x1 with expansion 4 (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Network input stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// torchvision: 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool.
    ImageNet,
    /// CIFAR: 3x3 stride-1 conv, BN, ReLU, no max-pool (keeps 32x32 resolution).
    Cifar,
}

/// A ResNet: stem, stages of residual blocks (first stage stride 1, the others stride 2),
/// global average pool, `fc`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// Blocks per stage (`layer1`, `layer2`, ...).
    pub layers: Vec<usize>,
    /// Bottleneck/basic width ("planes") per stage; output channels are width * expansion.
    pub widths: Vec<usize>,
    pub stem: Stem,
    /// Output channels of the stem conv.
    pub stem_width: usize,
    pub num_classes: usize,
    /// FFCV BlurPool before every stride>1 conv with at least 16 input channels.
    pub blurpool: bool,
}

impl ResNetConfig {
    fn imagenet(block: BlockKind, layers: [usize; 4], num_classes: usize) -> Self {
        Self {
            block,
            layers: layers.to_vec(),
            widths: vec![64, 128, 256, 512],
            stem: Stem::ImageNet,
            stem_width: 64,
            num_classes,
            blurpool: false,
        }
    }

    pub fn resnet18(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Basic, [2, 2, 2, 2], num_classes)
    }
    pub fn resnet34(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Basic, [3, 4, 6, 3], num_classes)
    }
    pub fn resnet50(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Bottleneck, [3, 4, 6, 3], num_classes)
    }
    pub fn resnet101(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Bottleneck, [3, 4, 23, 3], num_classes)
    }
    pub fn resnet152(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Bottleneck, [3, 8, 36, 3], num_classes)
    }

    /// The same network with the CIFAR stem (3x3 stride 1, no max-pool), e.g. `resnet18_cifar`.
    pub fn with_cifar_stem(mut self) -> Self {
        self.stem = Stem::Cifar;
        self
    }

    /// He et al.'s CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110, ...): 16-channel stem and
    /// three stages of n basic blocks with 16/32/64 channels.
    ///
    /// Shortcuts use option B (1x1 conv + BN projection, torchvision's `downsample.0/1`) where the
    /// shape changes: it is the same code path and checkpoint layout as the ImageNet ResNets, and
    /// option A's zero-padded strided identity has no parameters to load from torchvision-style
    /// checkpoints. The two projections add 2,752 parameters (ResNet-20: 269,722 -> 272,474).
    pub fn cifar_he(depth: usize, num_classes: usize) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            bail!("CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 56, ...), got {depth}");
        }
        let n = (depth - 2) / 6;
        Ok(Self {
            block: BlockKind::Basic,
            layers: vec![n; 3],
            widths: vec![16, 32, 64],
            stem: Stem::Cifar,
            stem_width: 16,
            num_classes,
            blurpool: false,
        })
    }

    /// Channels of the last feature map (= `fc` input).
    pub fn num_features(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.stem_width) * self.block.expansion()
    }
}
