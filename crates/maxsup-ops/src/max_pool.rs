//! `max_pool2d` as a candle custom op that records the arg-max of every window in the forward
//! pass, so the backward is a single scatter (candle's own max-pool only differentiates
//! kernel == stride).

use crate::cpu::slices::{contiguous_f32, is_cpu_f32, output_buffer, tensor_from_vec, with_f32};
use crate::reference;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// The pooling node; `argmax` holds, per output cell, the flat index inside its input plane.
struct MaxPoolOp {
    kernel: usize,
    stride: usize,
    pad: usize,
    argmax: Mutex<Vec<u32>>,
}

/// Output size of a pooling window sweep, or an error naming the offending sizes.
fn out_size(len: usize, kernel: usize, stride: usize, pad: usize) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        candle_core::bail!("max_pool2d: kernel ({kernel}) and stride ({stride}) must be >= 1");
    }
    if pad * 2 > kernel {
        candle_core::bail!("max_pool2d: padding {pad} must be at most half the kernel {kernel}");
    }
    if len + 2 * pad < kernel {
        candle_core::bail!("max_pool2d: kernel {kernel} larger than padded input {len} + 2*{pad}");
    }
    Ok((len + 2 * pad - kernel) / stride + 1)
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "maxsup-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l, "max_pool2d input")?;
        let (k, st, p) = (self.kernel, self.stride, self.pad);
        let (oh, ow) = (out_size(h, k, st, p)?, out_size(w, k, st, p)?);
        let mut y = output_buffer(n * c * oh * ow);
        let mut idx = vec![0u32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(idx.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(pl, (yp, ip))| {
                let plane = &x[pl * h * w..(pl + 1) * h * w];
                for i in 0..oh {
                    let r0 = (i * st).saturating_sub(p);
                    let r1 = (i * st + k - p).min(h);
                    for j in 0..ow {
                        let c0 = (j * st).saturating_sub(p);
                        let c1 = (j * st + k - p).min(w);
                        let (mut best, mut at) = (f32::NEG_INFINITY, r0 * w + c0);
                        for r in r0..r1 {
                            for (cc, &v) in plane[r * w + c0..r * w + c1].iter().enumerate() {
                                if v > best || v.is_nan() {
                                    best = v;
                                    at = r * w + c0 + cc;
                                }
                            }
                        }
                        yp[i * ow + j] = best;
                        ip[i * ow + j] = at as u32;
                    }
                }
            });
        *self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("max_pool2d: poisoned lock".into()))? = idx;
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        let (oh, ow) = (y.dim(2)?, y.dim(3)?);
        let idx = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("max_pool2d: poisoned lock".into()))?;
        let mut dx = vec![0f32; n * c * h * w];
        with_f32(dy, |g| {
            dx.par_chunks_mut(h * w).enumerate().for_each(|(pl, dp)| {
                let gp = &g[pl * oh * ow..(pl + 1) * oh * ow];
                let ip = &idx[pl * oh * ow..(pl + 1) * oh * ow];
                for (&gv, &at) in gp.iter().zip(ip) {
                    dp[at as usize] += gv;
                }
            });
            Ok(())
        })?;
        Ok(Some(tensor_from_vec(dx, x.shape())?))
    }
}

/// Max-pool over NCHW with a square `kernel`, `stride` and `padding` (padded cells never win),
/// with a backward pass for any kernel/stride combination. The gradient goes to the first
/// maximal element of each window.
///
/// f32 on CPU runs the arg-max custom op; other dtypes/devices the composed reference.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if !is_cpu_f32(&[x]) || x.rank() != 4 {
        return reference::max_pool2d(x, kernel, stride, padding);
    }
    x.contiguous()?.apply_op1(MaxPoolOp {
        kernel,
        stride,
        pad: padding,
        argmax: Mutex::new(Vec::new()),
    })
}
