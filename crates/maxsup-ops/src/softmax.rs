//! Fused softmax over the last dimension with its backward `dx = y * (dy - sum(dy * y))`
//! (candle's fused `softmax_last_dim` has none).

use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::{assume_init_mut, ensure_len, Output};
use crate::dispatch::fused;
use crate::reference;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per rayon task: enough work to amortise scheduling on short rows.
fn rows_per_task(d: usize) -> usize {
    (4096 / d.max(1)).max(1)
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "maxsup-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "softmax input")?;
        let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut y = Output::new(x.len());
        y.slots()
            .par_chunks_mut(d * rows_per_task(d))
            .zip(x.par_chunks(d * rows_per_task(d)))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                    let m = xr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let mut sum = 0f32;
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        sum += *o.write((v - m).exp());
                    }
                    // SAFETY: the loop above wrote the whole row (`yr` and `xr` have length d).
                    let yr = unsafe { assume_init_mut(yr) };
                    let inv = 1.0 / sum;
                    yr.iter_mut().for_each(|o| *o *= inv);
                }
            });
        // SAFETY: `y` has `x`'s length and its rows were written element for element.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((crate::cuda::rows::softmax_fwd(s, l)?, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBackwardOp)?,
        ))
    }
}

/// `dx = y * (dy - sum(dy * y))` per row, from the softmax output `y`.
struct SoftmaxBackwardOp;

impl CustomOp2 for SoftmaxBackwardOp {
    fn name(&self) -> &'static str {
        "maxsup-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let yv = contiguous_f32(ys, yl, "softmax output")?;
        let gv = contiguous_f32(gs, gl, "softmax output gradient")?;
        let d = yl.shape().dims().last().copied().unwrap_or(1).max(1);
        ensure_len("softmax output gradient", gv.len(), yv.len())?;
        let mut dx = Output::new(yv.len());
        let chunk = d * rows_per_task(d);
        dx.slots()
            .par_chunks_mut(chunk)
            .zip(yv.par_chunks(chunk).zip(gv.par_chunks(chunk)))
            .for_each(|(dc, (yc, gc))| {
                for ((dr, yr), gr) in dc.chunks_mut(d).zip(yc.chunks(d)).zip(gc.chunks(d)) {
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((o, &yv), &gv) in dr.iter_mut().zip(yr).zip(gr) {
                        o.write(yv * (gv - dot));
                    }
                }
            });
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
        Ok((
            crate::cuda::rows::softmax_bwd((ys, yl), (gs, gl))?,
            yl.shape().clone(),
        ))
    }
}

/// The gradient through [`softmax_last_dim`] from its output `y` and output gradient `dy`, as
/// an op of the tensors' device (where the fused op applies).
pub(crate) fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBackwardOp)
}

/// Softmax over the last dimension, differentiable (candle's `softmax_last_dim` is not).
///
/// Runs the fused op (f32 on the CPU, f32/bf16 on CUDA), else the composed reference.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused(&[x], &[]) || x.rank() == 0 {
        return reference::softmax_last_dim(x);
    }
    x.contiguous()?.apply_op1(SoftmaxOp)
}
