//! The channels-last memory format, as PyTorch's `torch.channels_last`: a 4-D tensor keeps its
//! logical `[N, C, H, W]` shape while its elements lie in N, H, W, C order (strides
//! `[H·W·C, 1, W·C, C]`).
//!
//! Why: cuDNN's tensor-core convolutions work on NHWC data; given NCHW tensors they transpose
//! every input and output around each call. Models stay written in NCHW: the caller converts the
//! input batch once ([`to_channels_last`]) and every op here that meets a channels-last tensor
//! (`conv2d`, `batch_norm2d[_relu]` in train mode, `max_pool2d`, `relu`, `add_relu`) runs its
//! NHWC kernel and returns a channels-last result, so the format carries through the network.
//! Inside, such an op sees the `[N, H, W, C]` permutation of its input, a contiguous tensor, and
//! candle's autograd maps gradients through the permutation; a gradient that arrives in NCHW
//! order (candle adds the two gradients of a residual input in logical order) is transposed
//! once by the op that receives it. Everything else (other ops, the composed reference) reads
//! channels-last tensors through their strides, correct in any format.

use candle_core::{Result, Tensor};

/// True when `t` is 4-D and its elements lie in channels-last order but not in NCHW order
/// (where the two coincide, 1x1 planes or a single channel, it counts as NCHW).
pub fn is_channels_last(t: &Tensor) -> bool {
    t.rank() == 4 && !t.is_contiguous() && t.permute((0, 2, 3, 1)).is_ok_and(|p| p.is_contiguous())
}

/// `t` ([N, C, H, W]) with its elements copied into channels-last order (differentiable; no copy
/// when it already is channels-last).
pub fn to_channels_last(t: &Tensor) -> Result<Tensor> {
    if t.rank() != 4 {
        candle_core::bail!(
            "to_channels_last: expects a 4-D [N, C, H, W] tensor, got {:?}",
            t.shape()
        );
    }
    if is_channels_last(t) {
        return Ok(t.clone());
    }
    t.permute((0, 2, 3, 1))?.contiguous()?.permute((0, 3, 1, 2))
}

/// The `[N, H, W, C]` tensor whose elements a channels-last `[N, C, H, W]` tensor holds: a
/// view, no copy. Why: a chain of ops that all take the op layout (ResNet's blocks,
/// [`crate::residual_block_nhwc`]) passes these between them, so the graph has no permutation
/// node (whose backward transposes a whole activation gradient) at each boundary.
pub fn nhwc_view(t: &Tensor) -> Result<Tensor> {
    let v = match t.rank() {
        4 => nhwc(t)?,
        _ => candle_core::bail!(
            "nhwc_view: expects a 4-D [N, C, H, W] tensor, got {:?}",
            t.shape()
        ),
    };
    if !v.is_contiguous() {
        candle_core::bail!(
            "nhwc_view: the {:?} tensor is not channels-last (strides {:?}); convert it with \
             to_channels_last first",
            t.shape(),
            t.stride()
        );
    }
    Ok(v)
}

/// The channels-last `[N, C, H, W]` view of a contiguous `[N, H, W, C]` tensor (the inverse of
/// [`nhwc_view`]; no copy).
pub fn channels_last_view(t: &Tensor) -> Result<Tensor> {
    if t.rank() != 4 || !t.is_contiguous() {
        candle_core::bail!(
            "channels_last_view: expects a contiguous 4-D [N, H, W, C] tensor, got {:?} with \
             strides {:?}",
            t.shape(),
            t.stride()
        );
    }
    from_nhwc(t)
}

/// The `[N, H, W, C]` view of an `[N, C, H, W]` tensor (contiguous when `t` is channels-last).
pub(crate) fn nhwc(t: &Tensor) -> Result<Tensor> {
    t.permute((0, 2, 3, 1))
}

/// The logical `[N, C, H, W]` view of an `[N, H, W, C]` result (channels-last when it is
/// contiguous).
pub(crate) fn from_nhwc(t: &Tensor) -> Result<Tensor> {
    t.permute((0, 3, 1, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn channels_last_is_told_from_nchw_and_keeps_the_values() {
        let x = Tensor::arange(0f32, 2. * 3. * 4. * 5., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4, 5))
            .unwrap();
        assert!(!is_channels_last(&x));
        let cl = to_channels_last(&x).unwrap();
        assert!(is_channels_last(&cl));
        assert_eq!(cl.dims(), x.dims());
        assert_eq!(cl.stride(), [60, 1, 15, 3]);
        let diff = (&cl - &x).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        assert!(nhwc(&cl).unwrap().is_contiguous());
        assert!(is_channels_last(&from_nhwc(&nhwc(&cl).unwrap()).unwrap()));
        // Converting twice copies nothing more.
        assert_eq!(to_channels_last(&cl).unwrap().stride(), cl.stride());
    }

    #[test]
    fn degenerate_shapes_count_as_nchw() {
        for shape in [(2, 8, 1, 1), (2, 1, 3, 3)] {
            let x = Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
            let cl = to_channels_last(&x).unwrap();
            assert!(!is_channels_last(&cl), "{shape:?}");
            assert!(cl.is_contiguous(), "{shape:?}: both orders are one");
        }
        let v = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(!is_channels_last(&v));
        assert!(to_channels_last(&v).is_err());
    }
}
