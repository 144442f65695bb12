//! `conv2d` as a candle custom op with a CPU kernel (im2col + GEMM, parallel over images) and a
//! CUDA one (cuDNN), and a backward that is one op too (dx its output, dw handed back beside it),
//! so it runs on the tensors' device. Gradients are computed only for tracked operands: the image batch gets no
//! input gradient.

use crate::cpu::conv::{backward, forward};
use crate::cpu::im2col::ConvGeom;
use crate::cpu::slices::contiguous_f32;
use crate::dispatch::fused;
use crate::reference;
use crate::side_output::SideOutput;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The convolution's hyper-parameters.
#[derive(Clone, Copy, Debug)]
struct ConvParams {
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
    /// Channels-last: the op's operands are the input as [N, H, W, C] and the weight as
    /// [O, KH, KW, C/groups], its result [N, OH, OW, O] (see `crate::layout`).
    nhwc: bool,
}

type Dims4 = (usize, usize, usize, usize);

impl ConvParams {
    /// The input's (N, C, H, W) and the weight's (O, C/groups, KH, KW), whatever the format.
    fn nchw_dims(&self, x: &Shape, w: &Shape) -> Result<(Dims4, Dims4)> {
        let (x, w) = (x.dims4()?, w.dims4()?);
        Ok(match self.nhwc {
            false => (x, w),
            true => ((x.0, x.3, x.1, x.2), (w.0, w.3, w.1, w.2)),
        })
    }

    fn geom(&self, x: &Shape, w: &Shape) -> Result<ConvGeom> {
        if self.groups != 1 {
            candle_core::bail!(
                "conv2d: the CPU kernel takes groups = 1, got {}",
                self.groups
            );
        }
        let (x, w) = self.nchw_dims(x, w)?;
        ConvGeom::new(x, w, self.stride, self.pad, self.dil)
    }

    /// The output shape in the op's format.
    fn out_shape(&self, n: usize, o: usize, (oh, ow): (usize, usize)) -> Shape {
        match self.nhwc {
            false => Shape::from((n, o, oh, ow)),
            true => Shape::from((n, oh, ow, o)),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_shape(&self, x: &Shape, w: &Shape) -> Result<crate::cuda::ConvShape> {
        let ((n, c, h, wd), (o, cg, kh, kw)) = self.nchw_dims(x, w)?;
        let g = self.groups;
        if g == 0 || c % g != 0 || o % g != 0 || cg * g != c {
            candle_core::bail!("conv2d: input {x:?} and weight {w:?} do not fit groups = {g}");
        }
        if self.stride == 0 || self.dil == 0 || kh == 0 || kw == 0 {
            candle_core::bail!(
                "conv2d: stride ({}), dilation ({}) and kernel {kh}x{kw} must be >= 1",
                self.stride,
                self.dil
            );
        }
        let fits = |len: usize, k: usize| len + 2 * self.pad > self.dil * (k - 1);
        if !fits(h, kh) || !fits(wd, kw) {
            candle_core::bail!(
                "conv2d: kernel {kh}x{kw} (dilation {}) larger than the padded input {x:?}",
                self.dil
            );
        }
        Ok(crate::cuda::ConvShape {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            stride: self.stride,
            pad: self.pad,
            dil: self.dil,
            groups: g,
            nhwc: self.nhwc,
        })
    }
}

/// The convolution node: hyper-parameters plus which gradients the graph needs.
struct Conv2dOp {
    params: ConvParams,
    need_dx: bool,
    need_dw: bool,
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
        let g = self.params.geom(xl.shape(), wl.shape())?;
        let x = contiguous_f32(xs, xl, "conv2d input")?;
        let w = contiguous_f32(ws, wl, "conv2d weight")?;
        let shape = self.params.out_shape(g.n, g.o, (g.oh, g.ow));
        if self.params.nhwc {
            let y = forward(&g, &nhwc_to_nchw(x, g.input())?, &ohwi_to_oihw(w, &g)?);
            return Ok((CpuStorage::F32(nchw_to_nhwc(&y, g.output())?), shape));
        }
        Ok((CpuStorage::F32(forward(&g, x, w)), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let s = self.params.cuda_shape(xl.shape(), wl.shape())?;
        let y = crate::cuda::conv2d_forward(&s, xs, xl, ws, wl)?;
        Ok((y, self.params.out_shape(s.n, s.o, s.out_hw())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        gradients(self.params, (self.need_dx, self.need_dw), x, w, dy)
    }
}

/// `(dx, dw)` of a convolution with operands `x`, `w` in the op's layout and output gradient
/// `dy`; `need` says which to compute (none: no kernel runs).
fn gradients(
    params: ConvParams,
    (need_dx, need_dw): (bool, bool),
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if !need_dx && !need_dw {
        return Ok((None, None));
    }
    let op = Conv2dBackwardOp {
        params,
        need_dx,
        need_dw,
        weight_grad: SideOutput::new("conv2d weight gradient"),
    };
    let first = x.apply_op3_no_bwd(w, &dy.contiguous()?, &op)?;
    if !need_dx {
        return Ok((None, Some(first)));
    }
    let dw = match need_dw {
        true => Some(op.weight_grad.take()?),
        false => None,
    };
    Ok((Some(first), dw))
}

/// A convolution inside a graph node that runs several ops (`crate::residual_block`): operands
/// already in the op's layout (contiguous NCHW input and OIHW weight, or NHWC and OHWI with
/// `nhwc`), and no candle node of its own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvInGraph {
    params: ConvParams,
}

impl ConvInGraph {
    pub(crate) fn new(stride: usize, padding: usize, groups: usize, nhwc: bool) -> Self {
        Self {
            params: ConvParams {
                stride,
                pad: padding,
                dil: 1,
                groups,
                nhwc,
            },
        }
    }

    /// The weight `[O, C/groups, KH, KW]` in the op's layout (a copy for channels-last).
    pub(crate) fn weight(&self, w: &Tensor) -> Result<Tensor> {
        match self.params.nhwc {
            true => crate::layout::nhwc(w)?.contiguous(),
            false => w.contiguous(),
        }
    }

    /// A weight gradient in the op's layout back in `[O, C/groups, KH, KW]` order, contiguous.
    pub(crate) fn weight_grad_oihw(&self, dw: &Tensor) -> Result<Tensor> {
        match self.params.nhwc {
            true => crate::layout::from_nhwc(dw)?.contiguous(),
            false => dw.contiguous(),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let op = Conv2dOp {
            params: self.params,
            need_dx: false,
            need_dw: false,
        };
        x.apply_op2_no_bwd(w, &op)
    }

    pub(crate) fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        need: (bool, bool),
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        gradients(self.params, need, x, w, dy)
    }
}

/// `(x, w, dy) -> dx` (or `dw` when only that is needed); when both are, `dw` is left in
/// `weight_grad` for the caller. Two separate buffers: a parameter gradient that shared a buffer
/// with the input gradient would keep the latter alive until the optimizer step.
struct Conv2dBackwardOp {
    params: ConvParams,
    need_dx: bool,
    need_dw: bool,
    weight_grad: SideOutput,
}

impl CustomOp3 for Conv2dBackwardOp {
    fn name(&self) -> &'static str {
        "maxsup-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.params.geom(xl.shape(), wl.shape())?;
        let xv = contiguous_f32(xs, xl, "conv2d input")?;
        let wv = contiguous_f32(ws, wl, "conv2d weight")?;
        let gv = contiguous_f32(gs, gl, "conv2d output gradient")?;
        let (dx, dw) = if self.params.nhwc {
            let (x, w) = (nhwc_to_nchw(xv, g.input())?, ohwi_to_oihw(wv, &g)?);
            let dy = nhwc_to_nchw(gv, g.output())?;
            let (dx, dw) = backward(&g, &x, &w, &dy, self.need_dx, self.need_dw);
            (
                dx.map(|d| nchw_to_nhwc(&d, g.input())).transpose()?,
                dw.map(|d| oihw_to_ohwi(&d, &g)).transpose()?,
            )
        } else {
            backward(&g, xv, wv, gv, self.need_dx, self.need_dw)
        };
        match (dx, dw) {
            (Some(dx), dw) => {
                if let Some(dw) = dw {
                    let shape = wl.shape().clone();
                    self.weight_grad.put(Tensor::from_vec(
                        dw,
                        shape,
                        &candle_core::Device::Cpu,
                    )?)?;
                }
                Ok((CpuStorage::F32(dx), xl.shape().clone()))
            }
            (None, Some(dw)) => Ok((CpuStorage::F32(dw), wl.shape().clone())),
            (None, None) => candle_core::bail!("conv2d backward: no gradient asked for"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let s = self.params.cuda_shape(xl.shape(), wl.shape())?;
        let need = (self.need_dx, self.need_dw);
        match crate::cuda::conv2d_backward(&s, xs, xl, ws, wl, gs, gl, need)? {
            (Some(dx), dw) => {
                if let Some(dw) = dw {
                    self.weight_grad.put_cuda(dw, wl.shape().clone())?;
                }
                Ok((dx, xl.shape().clone()))
            }
            (None, Some(dw)) => Ok((dw, wl.shape().clone())),
            (None, None) => candle_core::bail!("conv2d backward: no gradient asked for"),
        }
    }
}

/// NHWC -> NCHW of an image batch with the NCHW `dims`.
fn nhwc_to_nchw(v: &[f32], (n, c, h, w): Dims4) -> Result<Vec<f32>> {
    crate::cpu::uninit::ensure_len("conv2d NHWC operand", v.len(), n * c * h * w)?;
    Ok(crate::cpu::transpose::transpose_items(v, n, h * w, c))
}

/// NCHW -> NHWC of an image batch with the NCHW `dims`.
fn nchw_to_nhwc(v: &[f32], (n, c, h, w): Dims4) -> Result<Vec<f32>> {
    crate::cpu::uninit::ensure_len("conv2d NCHW result", v.len(), n * c * h * w)?;
    Ok(crate::cpu::transpose::transpose_items(v, n, c, h * w))
}

/// The OHWI weight of geometry `g` as OIHW.
fn ohwi_to_oihw(v: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    let (o, c, kh, kw) = g.weight();
    nhwc_to_nchw(v, (o, c, kh, kw))
}

/// An OIHW weight gradient of geometry `g` as OHWI.
fn oihw_to_ohwi(v: &[f32], g: &ConvGeom) -> Result<Vec<f32>> {
    let (o, c, kh, kw) = g.weight();
    nchw_to_nhwc(v, (o, c, kh, kw))
}

/// 2-D convolution, NCHW input, OIHW weight, optional bias of shape [O].
///
/// A channels-last input (`crate::layout`) runs the NHWC kernel (cuDNN's NHWC format on CUDA)
/// and gives a channels-last result.
///
/// Runs the fused op for f32 on the CPU (`groups == 1`: im2col + GEMM, 1x1 convs as plain GEMMs)
/// and for f32 or bf16 on CUDA (cuDNN, any `groups`); anything else runs the composed reference
/// (`reference::conv2d`). The input gradient is skipped when `x` is not tracked.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let groups_ok = groups == 1 || x.device().is_cuda();
    if !groups_ok || !fused(&[x, weight], &[]) || x.rank() != 4 || weight.rank() != 4 {
        return reference::conv2d(x, weight, bias, stride, padding, dilation, groups);
    }
    let nhwc = crate::layout::is_channels_last(x);
    let op = Conv2dOp {
        params: ConvParams {
            stride,
            pad: padding,
            dil: dilation,
            groups,
            nhwc,
        },
        need_dx: x.track_op(),
        need_dw: weight.track_op(),
    };
    if nhwc {
        // The weight's OHWI copy is part of the graph: its gradient flows back to the OIHW
        // parameter through candle's copy and permutation.
        let w = crate::layout::nhwc(weight)?.contiguous()?;
        let y = crate::layout::nhwc(x)?.apply_op2(&w, op)?;
        let y = match bias {
            Some(b) => {
                y.broadcast_add(&b.reshape((1, 1, 1, b.elem_count()))?.to_dtype(y.dtype())?)?
            }
            None => y,
        };
        return crate::layout::from_nhwc(&y);
    }
    let y = x.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?.to_dtype(y.dtype())?),
        None => Ok(y),
    }
}
