//! `conv2d` as a candle custom op: GEMM forward, GEMM input/weight gradients, and no input
//! gradient at all for inputs that are not part of the autograd graph (e.g. the image batch).

use crate::cpu::conv::{backward, forward};
use crate::cpu::im2col::ConvGeom;
use crate::cpu::slices::{contiguous_f32, is_cpu_f32, tensor_from_vec, with_f32};
use crate::reference;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// The convolution node: hyper-parameters plus which gradients the graph needs.
struct Conv2dOp {
    stride: usize,
    pad: usize,
    dil: usize,
    need_dx: bool,
    need_dw: bool,
}

impl Conv2dOp {
    fn geom(&self, x: &Layout, w: &Layout) -> Result<ConvGeom> {
        ConvGeom::new(
            x.shape().dims4()?,
            w.shape().dims4()?,
            self.stride,
            self.pad,
            self.dil,
        )
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "maxsup-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(xl, wl)?;
        let x = contiguous_f32(xs, xl, "conv2d input")?;
        let w = contiguous_f32(ws, wl, "conv2d weight")?;
        let y = forward(&g, x, w);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(x.dims4()?, w.dims4()?, self.stride, self.pad, self.dil)?;
        let (dx, dw) = with_f32(x, |xv| {
            with_f32(w, |wv| {
                with_f32(dy, |dyv| {
                    Ok(backward(&g, xv, wv, dyv, self.need_dx, self.need_dw))
                })
            })
        })?;
        let dx = dx.map(|v| tensor_from_vec(v, x.shape())).transpose()?;
        let dw = dw.map(|v| tensor_from_vec(v, w.shape())).transpose()?;
        Ok((dx, dw))
    }
}

/// 2-D convolution, NCHW input, OIHW weight, optional bias of shape [O].
///
/// f32 on CPU with `groups == 1` runs the GEMM custom op (parallel over images, 1x1 convs as plain
/// GEMMs, input gradient skipped when `x` is not tracked); anything else runs the composed
/// reference (`reference::conv2d`).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    if groups != 1 || !is_cpu_f32(&[x, weight]) || x.rank() != 4 || weight.rank() != 4 {
        return reference::conv2d(x, weight, bias, stride, padding, dilation, groups);
    }
    let op = Conv2dOp {
        stride,
        pad: padding,
        dil: dilation,
        need_dx: x.track_op(),
        need_dw: weight.track_op(),
    };
    let y = x.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}
