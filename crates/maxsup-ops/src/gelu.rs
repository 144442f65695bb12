//! Exact (erf) GELU as a custom op with a one-pass backward. candle's `gelu_erf` backward is
//! composed of ~10 elementwise ops, each a full pass (and a temporary) over the MLP activation.
//! The CPU kernels are vectorised (`cpu::normal`: Φ and φ without libm's scalar calls).

use crate::cpu::normal;
use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::{ensure_len, Output};
use crate::dispatch::fused;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 13;

struct GeluErfOp;

impl CustomOp1 for GeluErfOp {
    fn name(&self) -> &'static str {
        "maxsup-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "gelu input")?;
        let mut y = Output::new(x.len());
        y.slots()
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| normal::gelu(yc, xc));
        // SAFETY: `y` has `x`'s length and its chunks were written element for element.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((
            crate::cuda::map1("gelu_fwd", "gelu", s, l)?,
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(gelu_erf_backward(x, dy)?))
    }
}

/// The gradient through [`gelu_erf`] at its input `x` for the output gradient `dy`, as an op of
/// the tensors' device (where the fused op applies: f32 on the CPU, f32/bf16 on CUDA).
pub(crate) fn gelu_erf_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &GeluErfBackwardOp)
}

/// `dx = dy * (Phi(x) + x * phi(x))`.
struct GeluErfBackwardOp;

impl CustomOp2 for GeluErfBackwardOp {
    fn name(&self) -> &'static str {
        "maxsup-gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xv = contiguous_f32(xs, xl, "gelu input")?;
        let gv = contiguous_f32(gs, gl, "gelu output gradient")?;
        ensure_len("gelu output gradient", gv.len(), xv.len())?;
        let mut dx = Output::new(xv.len());
        dx.slots()
            .par_chunks_mut(CHUNK)
            .zip(xv.par_chunks(CHUNK).zip(gv.par_chunks(CHUNK)))
            .for_each(|(dc, (xc, gc))| normal::gelu_backward(dc, xc, gc));
        // SAFETY: the inputs have `dx`'s length, so every element was written.
        let dx = unsafe { dx.assume_init() };
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dx = crate::cuda::map2("gelu_bwd", "gelu backward", (xs, xl), (gs, gl))?;
        Ok((dx, xl.shape().clone()))
    }
}

/// GELU with the exact erf form (PyTorch's `nn.GELU()` default, timm's MLP), differentiable.
///
/// Runs the fused op (f32 on the CPU, f32/bf16 on CUDA), else candle's `Tensor::gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fused(&[x], &[]) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluErfOp)
}
