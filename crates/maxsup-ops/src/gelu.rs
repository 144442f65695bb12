//! Exact (erf) GELU as a custom op with a one-pass backward. candle's `gelu_erf` backward is
//! composed of ~10 elementwise ops, each a full pass (and a temporary) over the MLP activation.

use crate::cpu::slices::{contiguous_f32, is_cpu_f32, output_buffer, tensor_from_vec, with_f32};
use candle_core::cpu::erf::erf_f32;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 13;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

struct GeluErfOp;

impl CustomOp1 for GeluErfOp {
    fn name(&self) -> &'static str {
        "maxsup-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "gelu input")?;
        let mut y = output_buffer(x.len());
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| {
                for (o, &v) in yc.iter_mut().zip(xc) {
                    *o = 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_f32(x, |xv| {
            with_f32(dy, |gv| {
                let mut dx = output_buffer(xv.len());
                dx.par_chunks_mut(CHUNK)
                    .zip(xv.par_chunks(CHUNK).zip(gv.par_chunks(CHUNK)))
                    .for_each(|(dc, (xc, gc))| {
                        for ((o, &v), &g) in dc.iter_mut().zip(xc).zip(gc) {
                            let cdf = 0.5 * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
                            let pdf = FRAC_1_SQRT_2PI * (-0.5 * v * v).exp();
                            *o = g * (cdf + v * pdf);
                        }
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(tensor_from_vec(dx, x.shape())?))
    }
}

/// GELU with the exact erf form (PyTorch's `nn.GELU()` default, timm's MLP), differentiable.
///
/// f32 on CPU runs the fused custom op; other dtypes/devices candle's `Tensor::gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !is_cpu_f32(&[x]) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluErfOp)
}
