//! Residual blocks (torchvision `BasicBlock` / `Bottleneck`) and their building helpers.

use candle_core::{Result, Tensor};

use maxsup_ops::{BlockPair, ResidualBlock};

use crate::init::Init;
use crate::layers::batch_norm::{EPS, MOMENTUM};
use crate::layers::{BatchNorm2d, Conv2d};
use crate::params::Scope;

/// FFCV applies BlurPool only to strided convs with at least this many input channels.
const BLURPOOL_MIN_IN_CHANNELS: usize = 16;

/// A bias-free conv with torchvision's kaiming-normal (fan_out) init.
pub(crate) fn conv(
    s: &Scope,
    inp: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    blurpool: bool,
) -> Result<Conv2d> {
    Conv2d::new(
        s,
        crate::layers::conv::ConvSpec {
            in_channels: inp,
            out_channels: out,
            kernel,
            stride,
            padding: kernel / 2,
            bias: false,
            blurpool: blurpool && stride > 1 && inp >= BLURPOOL_MIN_IN_CHANNELS,
            weight_init: Init::kaiming_normal_fan_out(out, kernel * kernel),
        },
    )
}

/// The projection shortcut `downsample` = Sequential(conv1x1, BatchNorm2d).
#[derive(Debug, Clone)]
pub(crate) struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Downsample {
    fn new(s: &Scope, inp: usize, out: usize, stride: usize, blurpool: bool) -> Result<Self> {
        Ok(Self {
            conv: conv(&s.pp(0), inp, out, 1, stride, blurpool)?,
            bn: BatchNorm2d::new(&s.pp(1), out)?,
        })
    }
}

/// One residual block.
#[derive(Debug, Clone)]
pub(crate) enum Block {
    Basic {
        conv1: Conv2d,
        bn1: BatchNorm2d,
        conv2: Conv2d,
        bn2: BatchNorm2d,
        downsample: Option<Downsample>,
    },
    Bottleneck {
        conv1: Conv2d,
        bn1: BatchNorm2d,
        conv2: Conv2d,
        bn2: BatchNorm2d,
        conv3: Conv2d,
        bn3: BatchNorm2d,
        downsample: Option<Downsample>,
    },
}

/// What a block needs to know about its place in the network.
pub(crate) struct BlockSpec {
    pub inp: usize,
    pub planes: usize,
    pub stride: usize,
    pub blurpool: bool,
}

impl Block {
    pub(crate) fn basic(s: &Scope, b: &BlockSpec) -> Result<Self> {
        let out = b.planes;
        Ok(Block::Basic {
            conv1: conv(&s.pp("conv1"), b.inp, out, 3, b.stride, b.blurpool)?,
            bn1: BatchNorm2d::new(&s.pp("bn1"), out)?,
            conv2: conv(&s.pp("conv2"), out, out, 3, 1, b.blurpool)?,
            bn2: BatchNorm2d::new(&s.pp("bn2"), out)?,
            downsample: shortcut(s, b, out)?,
        })
    }

    pub(crate) fn bottleneck(s: &Scope, b: &BlockSpec) -> Result<Self> {
        let out = b.planes * 4;
        Ok(Block::Bottleneck {
            conv1: conv(&s.pp("conv1"), b.inp, b.planes, 1, 1, b.blurpool)?,
            bn1: BatchNorm2d::new(&s.pp("bn1"), b.planes)?,
            conv2: conv(&s.pp("conv2"), b.planes, b.planes, 3, b.stride, b.blurpool)?,
            bn2: BatchNorm2d::new(&s.pp("bn2"), b.planes)?,
            conv3: conv(&s.pp("conv3"), b.planes, out, 1, 1, b.blurpool)?,
            bn3: BatchNorm2d::new(&s.pp("bn3"), out)?,
            downsample: shortcut(s, b, out)?,
        })
    }

    /// The block as `maxsup_ops` runs it (`relu(main(x) + shortcut(x))`,
    /// `maxsup_ops::residual_blocks`), its conv weights in the dtype of the activations `x`.
    pub(crate) fn residual_block(&self, x: &Tensor) -> Result<ResidualBlock> {
        let pair = |c: &Conv2d, n: &BatchNorm2d| -> Result<BlockPair> {
            Ok((c.block_conv(x)?, n.block_norm()))
        };
        let (main, downsample) = match self {
            Block::Basic {
                conv1,
                bn1,
                conv2,
                bn2,
                downsample,
            } => (vec![pair(conv1, bn1)?, pair(conv2, bn2)?], downsample),
            Block::Bottleneck {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                downsample,
            } => (
                vec![pair(conv1, bn1)?, pair(conv2, bn2)?, pair(conv3, bn3)?],
                downsample,
            ),
        };
        Ok(ResidualBlock {
            main,
            shortcut: downsample
                .as_ref()
                .map(|d| pair(&d.conv, &d.bn))
                .transpose()?,
            momentum: MOMENTUM,
            eps: EPS,
        })
    }
}

/// torchvision adds a projection when the stride or the channel count changes.
fn shortcut(s: &Scope, b: &BlockSpec, out: usize) -> Result<Option<Downsample>> {
    if b.stride != 1 || b.inp != out {
        Ok(Some(Downsample::new(
            &s.pp("downsample"),
            b.inp,
            out,
            b.stride,
            b.blurpool,
        )?))
    } else {
        Ok(None)
    }
}
