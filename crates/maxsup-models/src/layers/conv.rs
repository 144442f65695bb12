//! 2-D convolution, optionally preceded by an anti-aliasing BlurPool.

use candle_core::{Result, Tensor};

use crate::init::Init;
use crate::params::Scope;

/// A convolution with square kernel. With BlurPool the layer follows FFCV's `BlurPoolConv2d`
/// (so FFCV checkpoints load): the conv weight is named `<name>.conv.weight` and the fixed
/// depthwise filter [[1,2,1],[2,4,2],[1,2,1]]/16 is the buffer `<name>.blur_filter` [C_in,1,3,3],
/// applied with stride 1, padding 1 before the (strided) conv.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    blur_filter: Option<Tensor>,
    stride: usize,
    padding: usize,
}

/// Geometry and initialisation of a [`Conv2d`].
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    pub blurpool: bool,
    pub weight_init: Init,
}

impl Conv2d {
    pub(crate) fn new(s: &Scope, spec: ConvSpec) -> Result<Self> {
        let shape = [
            spec.out_channels,
            spec.in_channels,
            spec.kernel,
            spec.kernel,
        ];
        let (weight_scope, blur_filter) = if spec.blurpool {
            let filter = blur_filter(spec.in_channels, s.device())?;
            let var = s.buffer_from("blur_filter", &filter)?;
            (s.pp("conv"), Some(var.as_tensor().clone()))
        } else {
            (s.clone(), None)
        };
        let weight = weight_scope.param("weight", &shape, spec.weight_init.clone())?;
        let bias = if spec.bias {
            let fan_in = spec.in_channels * spec.kernel * spec.kernel;
            Some(weight_scope.param("bias", &[spec.out_channels], Init::torch_default(fan_in))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            blur_filter,
            stride: spec.stride,
            padding: spec.padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let blurred;
        let x = match &self.blur_filter {
            Some(f) => {
                let channels = f.dim(0)?;
                blurred =
                    maxsup_ops::conv2d(x, &super::like(&f.detach(), x)?, None, 1, 1, 1, channels)?;
                &blurred
            }
            None => x,
        };
        let bias = self.bias.as_ref().map(|b| super::like(b, x)).transpose()?;
        maxsup_ops::conv2d(
            x,
            &super::like(&self.weight, x)?,
            bias.as_ref(),
            self.stride,
            self.padding,
            1,
            1,
        )
    }
}

impl Conv2d {
    /// The layer as a conv of a ResNet block ([`maxsup_ops::residual_block`]): its weight and
    /// BlurPool filter in the dtype of the activations `x`. Block convs have no bias.
    pub(crate) fn block_conv(&self, x: &Tensor) -> Result<maxsup_ops::BlockConv> {
        if self.bias.is_some() {
            candle_core::bail!("a residual block's conv has no bias, this layer has one");
        }
        Ok(maxsup_ops::BlockConv {
            weight: super::like(&self.weight, x)?,
            stride: self.stride,
            padding: self.padding,
            blur: self
                .blur_filter
                .as_ref()
                .map(|f| super::like(f, x))
                .transpose()?,
        })
    }
}

/// The binomial 3x3 low-pass filter, one copy per input channel: [C, 1, 3, 3].
fn blur_filter(channels: usize, device: &candle_core::Device) -> Result<Tensor> {
    let k: [f32; 9] = [1., 2., 1., 2., 4., 2., 1., 2., 1.];
    let k: Vec<f32> = k.iter().map(|v| v / 16.0).collect();
    Tensor::from_vec(k, (1, 1, 3, 3), device)?.repeat((channels, 1, 1, 1))
}
