//! `max_pool2d` as a candle custom op that records the arg-max of every window in the forward
//! pass, so the backward is a single scatter (candle's own max-pool only differentiates
//! kernel == stride).

use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::Output;
use crate::dispatch::fused;
use crate::reference;
use crate::side_output::SideOutput;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Kernel, stride and padding of a square pooling window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolGeom {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

/// The pooling node. `argmax` holds, per output cell, where its maximum was, as a tensor on the
/// input's device for the backward op: on the CPU the flat index inside the input plane (u32),
/// on CUDA the position inside the window (u8, `ky * kernel + kx`).
/// With `nhwc` the op takes the `[N, H, W, C]` permutation of a channels-last input and gives
/// `[N, OH, OW, C]`; the CPU arg-max is then the flat index inside the image.
struct MaxPoolOp {
    geom: PoolGeom,
    argmax: SideOutput,
    nhwc: bool,
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
        if self.nhwc {
            let x = contiguous_f32(s, l, "max_pool2d input")?;
            let (y, idx, shape) = pool_nhwc(x, l.shape().dims4()?, self.geom)?;
            self.argmax
                .put(Tensor::from_vec(idx, &shape, &candle_core::Device::Cpu)?)?;
            return Ok((CpuStorage::F32(y), shape));
        }
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l, "max_pool2d input")?;
        let (k, st, p) = (self.geom.kernel, self.geom.stride, self.geom.pad);
        let (oh, ow) = (out_size(h, k, st, p)?, out_size(w, k, st, p)?);
        let mut y = Output::new(n * c * oh * ow);
        let mut idx = vec![0u32; n * c * oh * ow];
        let stem = k == 3 && st == 2 && p == 1;
        y.slots()
            .par_chunks_mut(oh * ow)
            .zip(idx.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(pl, (yp, ip))| {
                let plane = &x[pl * h * w..(pl + 1) * h * w];
                if stem {
                    stem_pool_plane(plane, h, w, (oh, ow), yp, ip);
                } else {
                    pool_plane(plane, h, w, self.geom, (oh, ow), yp, ip);
                }
            });
        // SAFETY: every plane wrote all of its oh x ow cells.
        let y = unsafe { y.assume_init() };
        self.argmax.put(Tensor::from_vec(
            idx,
            (n, c, oh, ow),
            &candle_core::Device::Cpu,
        )?)?;
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = match self.nhwc {
            false => l.shape().dims4()?,
            true => {
                let (n, h, w, c) = l.shape().dims4()?;
                (n, c, h, w)
            }
        };
        let g = self.geom;
        let (oh, ow) = (
            out_size(h, g.kernel, g.stride, g.pad)?,
            out_size(w, g.kernel, g.stride, g.pad)?,
        );
        if g.kernel * g.kernel > 256 {
            candle_core::bail!(
                "max_pool2d: CUDA windows are at most 16x16, got {}",
                g.kernel
            );
        }
        let (y, arg) = crate::cuda::pool::max_pool_fwd(s, l, (n, c, h, w), g, (oh, ow), self.nhwc)?;
        let shape = match self.nhwc {
            false => Shape::from((n, c, oh, ow)),
            true => Shape::from((n, oh, ow, c)),
        };
        self.argmax.put_cuda(arg, shape.clone())?;
        Ok((y, shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let arg = self.argmax.get()?;
        let op = MaxPoolBackwardOp {
            geom: self.geom,
            input: x.dims4()?,
            nhwc: self.nhwc,
        };
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(&arg, &op)?))
    }
}

/// Max and arg-max (flat index in the plane) of every window of one plane, window by window.
fn pool_plane(
    plane: &[f32],
    h: usize,
    w: usize,
    geom: PoolGeom,
    (oh, ow): (usize, usize),
    yp: &mut [std::mem::MaybeUninit<f32>],
    ip: &mut [u32],
) {
    let (k, st, p) = (geom.kernel, geom.stride, geom.pad);
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
            yp[i * ow + j].write(best);
            ip[i * ow + j] = at as u32;
        }
    }
}

/// The 3x3 stride-2 padding-1 window of the ResNet stem over one plane, as element-wise passes.
///
/// Each input row is split into its even and odd columns (the odd ones shifted by one, with
/// `-inf` for the padding): the three taps of output column `j` are then `odd[j]`, `even[j]` and
/// `odd[j + 1]`, contiguous in `j`, and each tap of a row of windows is one vectorised
/// max-with-index pass. Scanned per window element by element this pooling took ~7% of a
/// ResNet-18 224 px step. Taps are visited in the same order (rows top to bottom, columns left
/// to right) with the same strict comparison, so the maxima and their indices are the generic
/// loop's.
fn stem_pool_plane(
    plane: &[f32],
    h: usize,
    w: usize,
    (oh, ow): (usize, usize),
    yp: &mut [std::mem::MaybeUninit<f32>],
    ip: &mut [u32],
) {
    thread_local! {
        static SPLIT: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    }
    SPLIT.with(|sc| {
        let (even, odd, best) = &mut *sc.borrow_mut();
        // even[r][j] = x[r][2j]; odd[r][m] = x[r][2m - 1] (m >= 1), -inf at m = 0 and past the row.
        even.resize(h * ow, 0.0);
        odd.clear();
        odd.resize(h * (ow + 1), f32::NEG_INFINITY);
        for r in 0..h {
            let row = &plane[r * w..(r + 1) * w];
            for j in 0..ow {
                even[r * ow + j] = row[2 * j];
                if 2 * j + 1 < w {
                    odd[r * (ow + 1) + j + 1] = row[2 * j + 1];
                }
            }
        }
        best.resize(ow, 0.0);
        for i in 0..oh {
            let at = &mut ip[i * ow..(i + 1) * ow];
            best.fill(f32::NEG_INFINITY);
            // The generic loop's starting index: the window's first in-image element.
            let r0 = (2 * i).saturating_sub(1);
            for (j, a) in at.iter_mut().enumerate() {
                *a = (r0 * w + (2 * j).saturating_sub(1)) as u32;
            }
            for r in r0..(2 * i + 2).min(h) {
                let (ev, od) = (
                    &even[r * ow..(r + 1) * ow],
                    &odd[r * (ow + 1)..(r + 1) * (ow + 1)],
                );
                // Tap columns 2j - 1, 2j, 2j + 1 (the first reads padding at j = 0: -inf, never
                // taken, so its index formula's wrap-around at j = 0 is never stored).
                let base = (r * w) as u32;
                crate::cpu::lanes::take_max(best, at, &od[..ow], base.wrapping_sub(1), 2);
                crate::cpu::lanes::take_max(best, at, ev, base, 2);
                crate::cpu::lanes::take_max(best, at, &od[1..], base + 1, 2);
            }
            for (y, &b) in yp[i * ow..(i + 1) * ow].iter_mut().zip(best.iter()) {
                y.write(b);
            }
        }
    })
}

/// Scatters the output gradient to the recorded maxima: `(dy, argmax) -> dx`.
struct MaxPoolBackwardOp {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    geom: PoolGeom,
    /// The op's input shape ([N, H, W, C] when `nhwc`).
    input: (usize, usize, usize, usize),
    nhwc: bool,
}

impl CustomOp2 for MaxPoolBackwardOp {
    fn name(&self) -> &'static str {
        "maxsup-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        is: &CpuStorage,
        il: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(gs, gl, "max_pool2d output gradient")?;
        let idx = match (is, il.contiguous_offsets()) {
            (CpuStorage::U32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("max_pool2d: arg-max must be contiguous u32"),
        };
        if self.nhwc {
            // Per image: the output cells scatter into the image's H·W·C input cells.
            let (n, h, w, c) = self.input;
            let per_out = g.len() / n.max(1);
            let mut dx = vec![0f32; n * h * w * c];
            if per_out > 0 {
                dx.par_chunks_mut(h * w * c)
                    .zip(g.par_chunks(per_out).zip(idx.par_chunks(per_out)))
                    .for_each(|(dp, (gp, ip))| {
                        for (&gv, &at) in gp.iter().zip(ip) {
                            dp[at as usize] += gv;
                        }
                    });
            }
            return Ok((CpuStorage::F32(dx), Shape::from(self.input)));
        }
        let (n, c, h, w) = self.input;
        let (_, _, oh, ow) = gl.shape().dims4()?;
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w).enumerate().for_each(|(pl, dp)| {
            let gp = &g[pl * oh * ow..(pl + 1) * oh * ow];
            let ip = &idx[pl * oh * ow..(pl + 1) * oh * ow];
            for (&gv, &at) in gp.iter().zip(ip) {
                dp[at as usize] += gv;
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from(self.input)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        is: &CudaStorage,
        il: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dx =
            crate::cuda::pool::max_pool_bwd((gs, gl), (is, il), self.geom, self.input, self.nhwc)?;
        Ok((dx, Shape::from(self.input)))
    }
}

/// Max-pool over NCHW with a square `kernel`, `stride` and `padding` (padded cells never win),
/// with a backward pass for any kernel/stride combination. The gradient goes to the first
/// maximal element of each window.
///
/// Runs the arg-max op (f32 on the CPU, f32/bf16 on CUDA), else the composed reference.
///
/// A channels-last input (`crate::layout`) runs the NHWC kernel and gives a channels-last result.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if !fused(&[x], &[]) || x.rank() != 4 {
        return reference::max_pool2d(x, kernel, stride, padding);
    }
    let nhwc = crate::layout::is_channels_last(x);
    let op = MaxPoolOp {
        geom: PoolGeom {
            kernel,
            stride,
            pad: padding,
        },
        argmax: SideOutput::new("max_pool2d arg-max"),
        nhwc,
    };
    match nhwc {
        true => crate::layout::from_nhwc(&crate::layout::nhwc(x)?.apply_op1(op)?),
        false => x.contiguous()?.apply_op1(op),
    }
}

/// Max-pool of an NHWC buffer `(n, h, w, c)`: the maxima, their flat indices inside each image
/// (`(r·W + col)·C + ch`, u32) and the output shape `[N, OH, OW, C]`. Same order of visits and
/// comparison as `pool_plane`, so the same element wins.
fn pool_nhwc(
    x: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    geom: PoolGeom,
) -> Result<(Vec<f32>, Vec<u32>, Shape)> {
    let (k, st, p) = (geom.kernel, geom.stride, geom.pad);
    let (oh, ow) = (out_size(h, k, st, p)?, out_size(w, k, st, p)?);
    let per_out = oh * ow * c;
    let mut y = vec![0f32; n * per_out];
    let mut idx = vec![0u32; n * per_out];
    if per_out > 0 {
        y.par_chunks_mut(per_out)
            .zip(idx.par_chunks_mut(per_out))
            .enumerate()
            .for_each(|(b, (yb, ib))| {
                let img = &x[b * h * w * c..(b + 1) * h * w * c];
                for i in 0..oh {
                    let (r0, r1) = ((i * st).saturating_sub(p), (i * st + k - p).min(h));
                    for j in 0..ow {
                        let (c0, c1) = ((j * st).saturating_sub(p), (j * st + k - p).min(w));
                        for ch in 0..c {
                            let (mut best, mut at) = (f32::NEG_INFINITY, (r0 * w + c0) * c + ch);
                            for r in r0..r1 {
                                for cc in c0..c1 {
                                    let v = img[(r * w + cc) * c + ch];
                                    if v > best || v.is_nan() {
                                        best = v;
                                        at = (r * w + cc) * c + ch;
                                    }
                                }
                            }
                            let o = (i * ow + j) * c + ch;
                            yb[o] = best;
                            ib[o] = at as u32;
                        }
                    }
                }
            });
    }
    Ok((y, idx, Shape::from((n, oh, ow, c))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    type Kernel<'a> = &'a dyn Fn(&mut [MaybeUninit<f32>], &mut [u32]);

    /// The stem's element-wise passes against the window-by-window scan, value and index, on
    /// even and odd sizes, ties (a constant plane, repeated values), -inf and NaN.
    #[test]
    fn stem_pool_matches_window_scan() {
        let geom = PoolGeom {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        for &(h, w) in &[(1, 1), (1, 5), (2, 2), (7, 9), (8, 12), (13, 6)] {
            let (oh, ow) = (out_size(h, 3, 2, 1).unwrap(), out_size(w, 3, 2, 1).unwrap());
            let planes: Vec<Vec<f32>> = vec![
                (0..h * w).map(|i| ((i * 37) % 11) as f32).collect(),
                vec![1.5; h * w],
                (0..h * w)
                    .map(|i| {
                        if i % 3 == 0 {
                            f32::NEG_INFINITY
                        } else {
                            (i % 4) as f32
                        }
                    })
                    .collect(),
                (0..h * w)
                    .map(|i| if i % 5 == 2 { f32::NAN } else { i as f32 })
                    .collect(),
                vec![f32::NEG_INFINITY; h * w],
            ];
            for plane in &planes {
                let run = |f: Kernel| {
                    let mut y = vec![MaybeUninit::new(0f32); oh * ow];
                    let mut at = vec![0u32; oh * ow];
                    f(&mut y, &mut at);
                    // SAFETY: both kernels write every cell (and it started written anyway).
                    let y: Vec<u32> = y
                        .iter()
                        .map(|v| unsafe { v.assume_init() }.to_bits())
                        .collect();
                    (y, at)
                };
                let fast = run(&|y, at| stem_pool_plane(plane, h, w, (oh, ow), y, at));
                let scan = run(&|y, at| pool_plane(plane, h, w, geom, (oh, ow), y, at));
                assert_eq!(fast, scan, "{h}x{w} plane {plane:?}");
            }
        }
    }
}
