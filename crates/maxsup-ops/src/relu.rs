//! ReLU as a custom op: one pass forward, one pass backward (`dy` where `y > 0`). candle's own
//! `relu` backward builds a zeros tensor, a comparison, a dtype cast and a product (4 passes and
//! 3 temporaries over the activation).

use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::{ensure_len, Output};
use crate::dispatch::fused;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

struct ReluOp;

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "maxsup-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "relu input")?;
        let mut y = Output::new(x.len());
        y.slots()
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| crate::cpu::lanes::relu(yc, xc));
        // SAFETY: `y` has `x`'s length and its chunks were written element for element.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((
            crate::cuda::map1("relu_fwd", "relu", s, l)?,
            l.shape().clone(),
        ))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_backward(y, dy)?))
    }
}

/// `dy` where `y > 0`, else 0: the gradient through a ReLU whose output is `y` (also the fused
/// BatchNorm+ReLU and add+ReLU), as an op so it runs on the tensors' device.
pub(crate) fn relu_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &ReluBackwardOp)
}

struct ReluBackwardOp;

impl CustomOp2 for ReluBackwardOp {
    fn name(&self) -> &'static str {
        "maxsup-relu-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let yv = contiguous_f32(ys, yl, "relu output")?;
        let gv = contiguous_f32(gs, gl, "relu output gradient")?;
        ensure_len("relu output gradient", gv.len(), yv.len())?;
        let mut dx = Output::new(yv.len());
        dx.slots()
            .par_chunks_mut(CHUNK)
            .zip(yv.par_chunks(CHUNK).zip(gv.par_chunks(CHUNK)))
            .for_each(|(dc, (yc, gc))| crate::cpu::lanes::relu_backward(dc, yc, gc));
        // SAFETY: the inputs have `dx`'s length, so every element was written.
        let dx = unsafe { dx.assume_init() };
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ys: &CudaStorage,
        yl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dx = crate::cuda::map2("relu_bwd", "relu backward", (ys, yl), (gs, gl))?;
        Ok((dx, yl.shape().clone()))
    }
}

/// `max(a + b, 0)` in one pass (the residual join of a ResNet block); both inputs get the same
/// gradient, `dy` where the output is positive.
struct AddReluOp;

impl CustomOp2 for AddReluOp {
    fn name(&self) -> &'static str {
        "maxsup-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(s1, l1, "add_relu lhs")?;
        let b = contiguous_f32(s2, l2, "add_relu rhs")?;
        ensure_len("add_relu rhs", b.len(), a.len())?;
        let mut y = Output::new(a.len());
        y.slots()
            .par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(yc, (ac, bc))| crate::cpu::lanes::add_relu(yc, ac, bc));
        // SAFETY: the inputs have `y`'s length, so every element was written.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = crate::cuda::map2("add_relu_fwd", "add_relu", (s1, l1), (s2, l2))?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = relu_backward(y, dy)?;
        Ok((Some(dx.clone()), Some(dx)))
    }
}

/// `relu(a + b)` for same-shape tensors: one fused op (f32 on the CPU, f32/bf16 on CUDA), else
/// candle's ops. A channels-last `a` gives a channels-last result.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        candle_core::bail!(
            "add_relu: shapes differ: {:?} and {:?}",
            a.shape(),
            b.shape()
        );
    }
    if !fused(&[a, b], &[]) {
        return (a + b)?.relu();
    }
    if crate::layout::is_channels_last(a) {
        // Element-wise over the NHWC buffers; `b` in NCHW order gets transposed to match.
        let (a, b) = (
            crate::layout::nhwc(a)?,
            crate::layout::nhwc(b)?.contiguous()?,
        );
        return crate::layout::from_nhwc(&a.apply_op2(&b, AddReluOp)?);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddReluOp)
}

/// `max(x, 0)`, differentiable (gradient 0 at 0, like PyTorch).
///
/// Runs the fused op (f32 on the CPU, f32/bf16 on CUDA), else candle's `Tensor::relu`. A
/// channels-last input gives a channels-last result.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fused(&[x], &[]) {
        return x.relu();
    }
    if crate::layout::is_channels_last(x) {
        return crate::layout::from_nhwc(&crate::layout::nhwc(x)?.apply_op1(ReluOp)?);
    }
    x.contiguous()?.apply_op1(ReluOp)
}
