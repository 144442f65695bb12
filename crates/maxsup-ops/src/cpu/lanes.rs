//! The element-wise inner loops of the CPU kernels, compiled for AVX-512, AVX2+FMA and the
//! baseline, with the best one chosen at run time (`multiversion`; the binaries stay portable).
//! Compiled for the x86-64 baseline alone these loops ran on 128-bit SSE2 vectors while
//! PyTorch's kernels use the machine's widest; each function here is one chunk's worth of work
//! of a rayon-parallel kernel, so the dispatch costs one indirect call per chunk.

use std::mem::MaybeUninit;

simd_kernel! {
    /// `y = max(x, 0)`.
    pub fn relu(y: &mut [MaybeUninit<f32>], x: &[f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write(v.max(0.0));
        }
    }
}

simd_kernel! {
    /// `dx = g where y > 0, else 0`.
    pub fn relu_backward(dx: &mut [MaybeUninit<f32>], y: &[f32], g: &[f32]) {
        for ((o, &yv), &gv) in dx.iter_mut().zip(y).zip(g) {
            o.write(if yv > 0.0 { gv } else { 0.0 });
        }
    }
}

simd_kernel! {
    /// `y = max(a + b, 0)`.
    pub fn add_relu(y: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) {
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            o.write((u + v).max(0.0));
        }
    }
}

simd_kernel! {
    /// `y = x * scale + shift`, then ReLU when `relu`.
    pub fn affine(y: &mut [MaybeUninit<f32>], x: &[f32], scale: f32, shift: f32, relu: bool) {
        if relu {
            for (o, &v) in y.iter_mut().zip(x) {
                o.write((v * scale + shift).max(0.0));
            }
        } else {
            for (o, &v) in y.iter_mut().zip(x) {
                o.write(v * scale + shift);
            }
        }
    }
}

simd_kernel! {
    /// `y = max(x * scale + shift + r, 0)`: a BatchNorm plane with the block's shortcut `r` and
    /// the ReLU, in one pass (the same floats as normalising, then `add_relu`).
    pub fn affine_add_relu(y: &mut [MaybeUninit<f32>], x: &[f32], r: &[f32], scale: f32, shift: f32) {
        for ((o, &v), &s) in y.iter_mut().zip(x).zip(r) {
            o.write((v * scale + shift + s).max(0.0));
        }
    }
}

/// Independent partial sums per reduction: 16 lanes, one AVX-512 register (the compiler keeps a
/// single serial chain for a plain `+=` loop, since reordering float additions changes them).
const LANES: usize = 16;

/// `(Σ g, Σ g * (x - mean) * rstd)` over one plane, in f32 (the caller adds planes in f64),
/// accumulated in [`LANES`] interleaved partial sums.
pub fn grad_sums(g: &[f32], x: &[f32], mean: f32, rstd: f32) -> (f32, f32) {
    let n = g.len().min(x.len());
    let (gc, gr) = g[..n].as_chunks::<LANES>();
    let (xc, xr) = x[..n].as_chunks::<LANES>();
    let (mut a, mut ax) = ([0f32; LANES], [0f32; LANES]);
    grad_sum_lanes(gc, xc, mean, rstd, &mut a, &mut ax);
    let (mut s, mut sx) = (a.iter().sum::<f32>(), ax.iter().sum::<f32>());
    for (&gv, &v) in gr.iter().zip(xr) {
        s += gv;
        sx += gv * (v - mean) * rstd;
    }
    (s, sx)
}

simd_kernel! {
    /// The lane sums of [`grad_sums`] over whole chunks, written to `a` and `ax`. Kept apart
    /// from the horizontal sums and the remainder, and with one loop per accumulator: written
    /// as one loop that also reduced, LLVM's SLP vectoriser paired `a[l]` with `ax[l]` into
    /// 2-lane vectors of scalar loads (5x slower than BatchNorm's input-gradient pass).
    fn grad_sum_lanes(
        g: &[[f32; LANES]],
        x: &[[f32; LANES]],
        mean: f32,
        rstd: f32,
        a_out: &mut [f32; LANES],
        ax_out: &mut [f32; LANES],
    ) {
        let (mut a, mut ax) = ([0f32; LANES], [0f32; LANES]);
        for (gb, xb) in g.iter().zip(x) {
            for l in 0..LANES {
                a[l] += gb[l];
            }
            for l in 0..LANES {
                ax[l] += gb[l] * (xb[l] - mean) * rstd;
            }
        }
        *a_out = a;
        *ax_out = ax;
    }
}

simd_kernel! {
    /// `Σ x` of one plane in f64, in [`LANES`] interleaved partial sums (BatchNorm's batch mean).
    pub fn sum_f64(x: &[f32]) -> f64 {
        let mut acc = [0f64; LANES];
        let chunks = x.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                acc[l] += c[l] as f64;
            }
        }
        acc.iter().sum::<f64>() + rest.iter().map(|&v| v as f64).sum::<f64>()
    }
}

simd_kernel! {
    /// `Σ (x - mean)^2` of one plane in f64, in [`LANES`] interleaved partial sums.
    pub fn sq_dev_sum_f64(x: &[f32], mean: f64) -> f64 {
        let mut acc = [0f64; LANES];
        let chunks = x.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                let d = c[l] as f64 - mean;
                acc[l] += d * d;
            }
        }
        acc.iter().sum::<f64>()
            + rest
                .iter()
                .map(|&v| (v as f64 - mean) * (v as f64 - mean))
                .sum::<f64>()
    }
}

simd_kernel! {
    /// BatchNorm's input gradient over one plane: `k * (m * g - s - (x - mean) * rstd * sx)`.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_dx(
        dx: &mut [MaybeUninit<f32>],
        g: &[f32],
        x: &[f32],
        k: f32,
        m: f32,
        s: f32,
        sx: f32,
        mean: f32,
        rstd: f32,
    ) {
        for ((o, &gv), &v) in dx.iter_mut().zip(g).zip(x) {
            o.write(k * (m * gv - s - (v - mean) * rstd * sx));
        }
    }
}

simd_kernel! {
    /// [`affine`] with per-element `scale` and `shift` (one image's channels expanded over their
    /// pixels): BatchNorm on planes of few pixels, a whole image at a time.
    pub fn affine_vec(
        y: &mut [MaybeUninit<f32>],
        x: &[f32],
        scale: &[f32],
        shift: &[f32],
        relu: bool,
    ) {
        let it = y.iter_mut().zip(x).zip(scale.iter().zip(shift));
        if relu {
            for ((o, &v), (&a, &b)) in it {
                o.write((v * a + b).max(0.0));
            }
        } else {
            for ((o, &v), (&a, &b)) in it {
                o.write(v * a + b);
            }
        }
    }
}

simd_kernel! {
    /// `y = max(x * scale + shift + r, 0)` with per-element constants (one image of few pixels).
    pub fn affine_vec_add_relu(
        y: &mut [MaybeUninit<f32>],
        x: &[f32],
        r: &[f32],
        scale: &[f32],
        shift: &[f32],
    ) {
        let it = y.iter_mut().zip(x.iter().zip(r)).zip(scale.iter().zip(shift));
        for ((o, (&v, &s)), (&a, &b)) in it {
            o.write((v * a + b + s).max(0.0));
        }
    }
}

/// Per-element constants of BatchNorm's input gradient (see [`batch_norm_dx`]), expanded over
/// one image: `k`, `s`, `sx`, `mean`, `rstd` of each element's channel.
pub struct DxConsts<'a> {
    pub k: &'a [f32],
    pub s: &'a [f32],
    pub sx: &'a [f32],
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
}

simd_kernel! {
    /// [`batch_norm_dx`] with per-element constants, the same arithmetic element for element.
    pub fn batch_norm_dx_vec(dx: &mut [MaybeUninit<f32>], g: &[f32], x: &[f32], m: f32, c: &DxConsts) {
        let n = dx.len().min(g.len()).min(x.len()).min(c.k.len()).min(c.s.len());
        let n = n.min(c.sx.len()).min(c.mean.len()).min(c.rstd.len());
        for i in 0..n {
            let v = c.k[i] * (m * g[i] - c.s[i] - (x[i] - c.mean[i]) * c.rstd[i] * c.sx[i]);
            dx[i].write(v);
        }
    }
}

simd_kernel! {
    /// `acc += x` in f64, element for element (per-channel sums over images, image-major).
    pub fn add_f64(acc: &mut [f64], x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += v as f64;
        }
    }
}

simd_kernel! {
    /// `acc += (x - mean)^2` in f64, element for element.
    pub fn add_sq_dev_f64(acc: &mut [f64], x: &[f32], mean: &[f64]) {
        for ((a, &v), &mu) in acc.iter_mut().zip(x).zip(mean) {
            let d = v as f64 - mu;
            *a += d * d;
        }
    }
}

simd_kernel! {
    /// `s += g` and `sx += g * (x - mean) * rstd` (the products in f32, as in [`grad_sums`]),
    /// element for element in f64.
    pub fn add_grad_sums_f64(
        s: &mut [f64],
        sx: &mut [f64],
        g: &[f32],
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let n = s.len().min(sx.len()).min(g.len()).min(x.len()).min(mean.len()).min(rstd.len());
        for i in 0..n {
            s[i] += g[i] as f64;
            sx[i] += (g[i] * (x[i] - mean[i]) * rstd[i]) as f64;
        }
    }
}

simd_kernel! {
    /// Running max with its index, element for element: where `v[j]` is greater than `best[j]`
    /// (or NaN) it replaces it and `at[j] = first + step * j`. Max-pooling's window scan, one tap
    /// for a row of windows at a time.
    pub fn take_max(best: &mut [f32], at: &mut [u32], v: &[f32], first: u32, step: u32) {
        for (j, ((b, a), &x)) in best.iter_mut().zip(at.iter_mut()).zip(v).enumerate() {
            let take = x > *b || x.is_nan();
            *b = if take { x } else { *b };
            *a = if take { first.wrapping_add(step.wrapping_mul(j as u32)) } else { *a };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: usize) -> Vec<MaybeUninit<f32>> {
        (0..n).map(|_| MaybeUninit::new(f32::NAN)).collect()
    }

    fn read(v: &[MaybeUninit<f32>]) -> Vec<f32> {
        // SAFETY: every test writes all elements first.
        v.iter().map(|o| unsafe { o.assume_init() }).collect()
    }

    /// The per-element kernels of the image-major BatchNorm against their per-plane forms.
    #[test]
    fn per_element_kernels_match_per_plane_kernels() {
        for n in [0usize, 1, 5, 16, 37] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.91).cos()).collect();
            let a: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.01).collect();
            let b: Vec<f32> = (0..n).map(|i| -0.2 + i as f32 * 0.02).collect();
            for r in [false, true] {
                let (mut y, mut want) = (out(n), out(n));
                affine_vec(&mut y, &x, &a, &b, r);
                for i in 0..n {
                    affine(&mut want[i..i + 1], &x[i..i + 1], a[i], b[i], r);
                }
                assert_eq!(read(&y), read(&want));
            }
            let c = DxConsts {
                k: &a,
                s: &b,
                sx: &g,
                mean: &b,
                rstd: &a,
            };
            let (mut dx, mut want) = (out(n), out(n));
            batch_norm_dx_vec(&mut dx, &g, &x, 7.0, &c);
            for i in 0..n {
                let o = &mut want[i..i + 1];
                batch_norm_dx(
                    o,
                    &g[i..i + 1],
                    &x[i..i + 1],
                    a[i],
                    7.0,
                    b[i],
                    g[i],
                    b[i],
                    a[i],
                );
            }
            assert_eq!(read(&dx), read(&want));
            let (mut s, mut sx, mut q) = (vec![1f64; n], vec![2f64; n], vec![3f64; n]);
            add_grad_sums_f64(&mut s, &mut sx, &g, &x, &b, &a);
            let mean64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            add_sq_dev_f64(&mut q, &x, &mean64);
            for i in 0..n {
                assert_eq!(s[i], 1.0 + g[i] as f64);
                assert_eq!(sx[i], 2.0 + (g[i] * (x[i] - b[i]) * a[i]) as f64);
                assert_eq!(q[i], 3.0 + (x[i] as f64 - mean64[i]).powi(2));
            }
            add_f64(&mut q, &x);
            assert_eq!(
                q[..],
                (0..n)
                    .map(|i| 3.0 + (x[i] as f64 - mean64[i]).powi(2) + x[i] as f64)
                    .collect::<Vec<_>>()[..]
            );
        }
    }

    /// Every lane width gives the scalar loop's values, over lengths that leave remainders.
    #[test]
    fn kernels_match_their_scalar_definitions() {
        for n in [0usize, 1, 7, 16, 33, 100] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.91).cos()).collect();
            let mut y = out(n);
            relu(&mut y, &x);
            assert_eq!(read(&y), x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
            relu_backward(&mut y, &x, &g);
            let want: Vec<f32> = x
                .iter()
                .zip(&g)
                .map(|(&a, &b)| if a > 0.0 { b } else { 0.0 })
                .collect();
            assert_eq!(read(&y), want);
            add_relu(&mut y, &x, &g);
            let want: Vec<f32> = x.iter().zip(&g).map(|(a, b)| (a + b).max(0.0)).collect();
            assert_eq!(read(&y), want);
            for r in [false, true] {
                affine(&mut y, &x, 1.5, -0.25, r);
                let want: Vec<f32> = x
                    .iter()
                    .map(|v| {
                        if r {
                            (v * 1.5 - 0.25).max(0.0)
                        } else {
                            v * 1.5 - 0.25
                        }
                    })
                    .collect();
                assert_eq!(read(&y), want);
            }
            let s64: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum_f64(&x) - s64).abs() < 1e-9);
            let q64: f64 = x.iter().map(|&v| (v as f64 - 0.3).powi(2)).sum();
            assert!((sq_dev_sum_f64(&x, 0.3) - q64).abs() < 1e-9);
            let (a, ax) = grad_sums(&g, &x, 0.5, 2.0);
            let (ea, eax) = g.iter().zip(&x).fold((0f64, 0f64), |(s, sx), (&gv, &v)| {
                (s + gv as f64, sx + (gv * (v - 0.5) * 2.0) as f64)
            });
            assert!((a as f64 - ea).abs() < 1e-4 && (ax as f64 - eax).abs() < 1e-3);
            batch_norm_dx(&mut y, &g, &x, 0.5, n as f32, 0.1, 0.2, 0.5, 2.0);
            let want: Vec<f32> = g
                .iter()
                .zip(&x)
                .map(|(&gv, &v)| 0.5 * (n as f32 * gv - 0.1 - (v - 0.5) * 2.0 * 0.2))
                .collect();
            for (a, b) in read(&y).iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}
