//! Direct 3x3 stride-1 "same" convolution for the narrow layers, accumulated in AVX-512
//! registers: the forward pass and, as the same convolution of dY with the flipped transposed
//! weight, the input gradient.
//!
//! Below 64 channels (ResNet-20's 16- and 32-channel layers) Winograd's transforms cost more than
//! they save (`winograd::applies`), and the im2col GEMM copies the input 9 times, then the `gemm`
//! crate packs those copies again, for only O = 16..32 multiply-adds per copied element. Here an
//! output row of a block of output channels stays in 16 registers while the kernel walks the
//! input channels and taps of a zero-padded copy of the image: per (channel, tap), one or two
//! 16-wide loads of the input row and one broadcast weight per output channel feed 16 fused
//! multiply-adds. `MAXSUP_DIRECT3X3=0` turns the path off (A/B runs).

use super::im2col::ConvGeom;
use super::slices::{num_threads, split_range};
use super::uninit::Output;
use super::winograd;
use rayon::prelude::*;

/// f32 lanes of an AVX-512 register. Rows are cut into segments of 32 columns (2 vectors, 8
/// output channels per block) or, when a row fits one vector, 16 (16 output channels).
const LANES: usize = 16;

/// Rows narrower than this leave most of a vector's lanes idle (a 512-channel 4x4 layer ran
/// 1.3x slower here than on im2col).
const MIN_WIDTH: usize = 8;

/// Channels from which the im2col GEMM (or Winograd) is the better kernel.
const NARROW: usize = 64;

/// Whether the direct kernel takes this convolution: 3x3, stride 1, padding 1, dilation 1, fewer
/// than 64 input or output channels (so not Winograd's), rows of at least 8 columns, on a CPU
/// with AVX-512F.
pub fn applies(g: &ConvGeom) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED
        .get_or_init(|| std::env::var("MAXSUP_DIRECT3X3").as_deref() != Ok("0") && has_avx512());
    // A "same" 3x3 keeps the image size; Winograd takes only 64+ channels on both sides.
    enabled && winograd::shape_fits(g) && g.c.min(g.o) < NARROW && g.w >= MIN_WIDTH
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y[N, O, H, W] = conv(x[N, C, H, W], w[O, C, 3, 3])` (see [`applies`]).
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let shape = Shape::of(g.n, g.c, g.o, g.h, g.w);
    let wp = pack_weight(&shape, |o, c, t| w[(o * g.c + c) * 9 + t]);
    run(&shape, x, &wp)
}

/// `dx[N, C, H, W]` of [`forward`] given `dy[N, O, H, W]`: the same convolution of dy with
/// `w'[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw]`.
pub fn input_grad(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let shape = Shape::of(g.n, g.o, g.c, g.h, g.w);
    let wp = pack_weight(&shape, |c, o, t| w[(o * g.c + c) * 9 + (8 - t)]);
    run(&shape, dy, &wp)
}

/// `dW[O, C, 3, 3]` of [`forward`] given `dy[N, O, H, W]`: per image, per group of up to three
/// output channels and per input channel, the (channel, tap) sums over the image's pixels
/// accumulate in up to 27 registers, then into the thread's 16-lane partials `[O][C][9][16]`;
/// each thread's lanes are summed once at the end, and the threads' gradients added in order.
pub fn weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let s = Shape::of(g.n, g.c, g.o, g.h, g.w);
    let (chw, ohw) = (g.c * g.h * g.w, g.o * g.h * g.w);
    assert!(
        x.len() >= g.n * chw && dy.len() >= g.n * ohw,
        "direct3x3: buffers too small"
    );
    let parts: Vec<Vec<f32>> = split_range(g.n, num_threads())
        .into_par_iter()
        .map(|r| {
            // 16 lanes per (o, c, tap), summed across lanes once at the end: reducing the
            // registers per image cost about half as much again as the multiply-adds.
            let mut lanes = vec![0f32; g.o * g.c * 9 * LANES];
            PADDED.with(|p| {
                let mut p = p.borrow_mut();
                for b in r {
                    pad_image(&s, &x[b * chw..(b + 1) * chw], &mut p);
                    let dyi = &dy[b * ohw..(b + 1) * ohw];
                    // SAFETY: `applies` (through `has_avx512`) checked AVX-512F at run time.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        avx512::weight_grad_image(&s, &p, dyi, &mut lanes)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("direct3x3 runs only where AVX-512F was detected");
                }
            });
            lanes
                .chunks_exact(LANES)
                .map(|l| l.iter().sum::<f32>())
                .collect::<Vec<f32>>()
        })
        .collect();
    let mut dw = vec![0f32; g.o * g.c * 9];
    for part in &parts {
        for (d, &v) in dw.iter_mut().zip(part) {
            *d += v;
        }
    }
    dw
}

/// One convolution's sizes: `ci` input and `co` output channels, and how rows are blocked.
struct Shape {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    /// Vectors per row segment (1, 2 or 4) and output channels per register block (16 / nv).
    nv: usize,
    ob: usize,
    /// Columns of a padded input row: the row, the two padding columns and slack for the last
    /// segment's full-width loads.
    rw: usize,
}

impl Shape {
    fn of(n: usize, ci: usize, co: usize, h: usize, w: usize) -> Self {
        let nv = if w <= LANES { 1 } else { 2 };
        let ob = 16 / nv;
        let rw = w.div_ceil(LANES * nv) * LANES * nv + LANES;
        Self {
            n,
            ci,
            co,
            h,
            w,
            nv,
            ob,
            rw,
        }
    }

    fn blocks(&self) -> usize {
        self.co.div_ceil(self.ob)
    }
}

/// The weight as `[block][ci][tap][ob]` (zeros past `co`), so that a tap's `ob` broadcasts read
/// consecutive floats. `at(out_channel, in_channel, tap)` reads the source weight.
fn pack_weight(s: &Shape, at: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut wp = vec![0f32; s.blocks() * s.ci * 9 * s.ob];
    for blk in 0..s.blocks() {
        for c in 0..s.ci {
            for t in 0..9 {
                for j in 0..s.ob {
                    let o = blk * s.ob + j;
                    if o < s.co {
                        wp[((blk * s.ci + c) * 9 + t) * s.ob + j] = at(o, c, t);
                    }
                }
            }
        }
    }
    wp
}

thread_local! {
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs the convolution image by image in parallel.
fn run(s: &Shape, x: &[f32], wp: &[f32]) -> Vec<f32> {
    let (in_len, out_len) = (s.ci * s.h * s.w, s.co * s.h * s.w);
    assert!(x.len() >= s.n * in_len, "direct3x3: input too small");
    let mut y = Output::new(s.n * out_len);
    y.slots()
        .par_chunks_mut(out_len.max(1))
        .zip(x.par_chunks(in_len.max(1)))
        .for_each(|(yi, xi)| {
            PADDED.with(|p| {
                let mut p = p.borrow_mut();
                pad_image(s, xi, &mut p);
                // SAFETY: `applies` (through `has_avx512`) checked AVX-512F at run time.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx512::image(s, &p, wp, yi)
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("direct3x3 runs only where AVX-512F was detected");
            })
        });
    // SAFETY: `avx512::image` writes every (channel, row, column) of every image's output.
    unsafe { y.assume_init() }
}

/// `[ci][h + 2][rw]` copy of one image with a zero border (and zero slack on the right).
fn pad_image(s: &Shape, xi: &[f32], p: &mut Vec<f32>) {
    let rows = s.h + 2;
    p.clear();
    p.resize(s.ci * rows * s.rw, 0.0);
    for c in 0..s.ci {
        for r in 0..s.h {
            let src = &xi[(c * s.h + r) * s.w..(c * s.h + r + 1) * s.w];
            let at = (c * rows + r + 1) * s.rw + 1;
            p[at..at + s.w].copy_from_slice(src);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Shape;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Every output row segment of every block of one image.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn image(s: &Shape, xp: &[f32], wp: &[f32], yi: &mut [MaybeUninit<f32>]) {
        let seg = super::LANES * s.nv;
        for blk in 0..s.blocks() {
            let wb = &wp[blk * s.ci * 9 * s.ob..(blk + 1) * s.ci * 9 * s.ob];
            for r in 0..s.h {
                for w0 in (0..s.w).step_by(seg) {
                    match s.nv {
                        1 => segment::<16, 1>(s, xp, wb, blk, r, w0, yi),
                        _ => segment::<8, 2>(s, xp, wb, blk, r, w0, yi),
                    }
                }
            }
        }
    }

    /// Adds one image's weight gradient into the lane sums `dw [co][ci][9][16]` (`s.ci` input
    /// channels padded in `xp`, `dyi [co][h][w]`).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weight_grad_image(s: &Shape, xp: &[f32], dyi: &[f32], dw: &mut [f32]) {
        let mut o0 = 0;
        while o0 < s.co {
            if o0 + 3 <= s.co {
                weight_grad_pair::<3>(s, xp, dyi, o0, dw);
                o0 += 3;
            } else if o0 + 2 <= s.co {
                weight_grad_pair::<2>(s, xp, dyi, o0, dw);
                o0 += 2;
            } else {
                weight_grad_pair::<1>(s, xp, dyi, o0, dw);
                o0 += 1;
            }
        }
    }

    /// Output channels `o0 .. o0 + OB` of [`weight_grad_image`], for every input channel.
    #[target_feature(enable = "avx512f")]
    unsafe fn weight_grad_pair<const OB: usize>(
        s: &Shape,
        xp: &[f32],
        dyi: &[f32],
        o0: usize,
        dw: &mut [f32],
    ) {
        let (rows, hw, lanes) = (s.h + 2, s.h * s.w, super::LANES);
        for c in 0..s.ci {
            let mut acc = [[_mm512_setzero_ps(); 9]; OB];
            for r in 0..s.h {
                for w0 in (0..s.w).step_by(lanes) {
                    let len = (s.w - w0).min(lanes);
                    let mask: __mmask16 = if len == lanes {
                        0xffff
                    } else {
                        (1u16 << len) - 1
                    };
                    let mut dv = [_mm512_setzero_ps(); OB];
                    for (j, dv) in dv.iter_mut().enumerate() {
                        let at = (o0 + j) * hw + r * s.w + w0;
                        // Reads the `len` lanes of `dyi[at..at + len]` only (masked load).
                        *dv = _mm512_maskz_loadu_ps(mask, dyi[at..at + len].as_ptr());
                    }
                    for kh in 0..3 {
                        let row = &xp[(c * rows + r + kh) * s.rw..(c * rows + r + kh + 1) * s.rw];
                        for kw in 0..3 {
                            let at = w0 + kw;
                            // In bounds: `rw` leaves a full vector of slack past the row.
                            let xv = _mm512_loadu_ps(row[at..at + lanes].as_ptr());
                            for (a, &d) in acc.iter_mut().zip(&dv) {
                                a[kh * 3 + kw] = _mm512_fmadd_ps(d, xv, a[kh * 3 + kw]);
                            }
                        }
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let at = ((o0 + j) * s.ci + c) * 9 * lanes;
                for (t, &v) in a.iter().enumerate() {
                    let d = &mut dw[at + t * lanes..at + (t + 1) * lanes];
                    let sum = _mm512_add_ps(_mm512_loadu_ps(d.as_ptr()), v);
                    _mm512_storeu_ps(d.as_mut_ptr(), sum);
                }
            }
        }
    }

    /// Output row `r`, columns `w0 .. w0 + 16 * NV`, channels `blk * OB ..` of one image.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn segment<const OB: usize, const NV: usize>(
        s: &Shape,
        xp: &[f32],
        wb: &[f32],
        blk: usize,
        r: usize,
        w0: usize,
        yi: &mut [MaybeUninit<f32>],
    ) {
        let rows = s.h + 2;
        let mut acc = [[_mm512_setzero_ps(); NV]; OB];
        for c in 0..s.ci {
            for kh in 0..3 {
                let row = &xp[(c * rows + r + kh) * s.rw..(c * rows + r + kh + 1) * s.rw];
                for kw in 0..3 {
                    let mut xv = [_mm512_setzero_ps(); NV];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        let at = w0 + v * super::LANES + kw;
                        // In bounds: `rw` leaves a full vector of slack past the last segment.
                        *xv = _mm512_loadu_ps(row[at..at + super::LANES].as_ptr());
                    }
                    let wt = &wb[(c * 9 + kh * 3 + kw) * OB..(c * 9 + kh * 3 + kw + 1) * OB];
                    for (a, &wj) in acc.iter_mut().zip(wt) {
                        let wv = _mm512_set1_ps(wj);
                        for (a, &x) in a.iter_mut().zip(&xv) {
                            *a = _mm512_fmadd_ps(wv, x, *a);
                        }
                    }
                }
            }
        }
        let hw = s.h * s.w;
        for (j, a) in acc.iter().enumerate() {
            let o = blk * OB + j;
            if o >= s.co {
                break;
            }
            let out = &mut yi[o * hw + r * s.w..o * hw + (r + 1) * s.w];
            for (v, &a) in a.iter().enumerate() {
                let col = w0 + v * super::LANES;
                if col >= s.w {
                    break;
                }
                let len = (s.w - col).min(super::LANES);
                let mask: __mmask16 = if len == super::LANES {
                    0xffff
                } else {
                    (1u16 << len) - 1
                };
                // Writes the `len` lanes of `out[col..col + len]` only (masked store).
                _mm512_mask_storeu_ps(out[col..col + len].as_mut_ptr().cast::<f32>(), mask, a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(n: usize, c: usize, o: usize, h: usize, w: usize) -> ConvGeom {
        ConvGeom::new((n, c, h, w), (o, c, 3, 3), 1, 1, 1).unwrap()
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
            .collect()
    }

    /// `x[b, c, r, col]` with zero padding outside the image.
    fn at(x: &[f32], g: &ConvGeom, ch: usize, b: usize, r: isize, col: isize) -> f64 {
        if r < 0 || col < 0 || r >= g.h as isize || col >= g.w as isize {
            return 0.0;
        }
        x[((b * ch) * g.h + r as usize) * g.w + col as usize] as f64
    }

    /// The three kernels against direct f64 sums, on rows of one masked vector, of two vectors
    /// and of two segments, with partial output-channel blocks. Needs AVX-512F, which is the
    /// only place the kernels run; elsewhere it says so and checks nothing.
    #[test]
    fn kernels_match_naive_sums_where_avx512_is_present() {
        if !has_avx512() {
            eprintln!("direct3x3: no AVX-512F on this CPU, the kernels cannot run here");
            return;
        }
        for (i, &(n, c, o, h, w)) in [(2, 3, 5, 6, 9), (1, 4, 17, 3, 20), (2, 2, 3, 4, 40)]
            .iter()
            .enumerate()
        {
            let g = geom(n, c, o, h, w);
            let (x, wt, dy) = (
                values(n * c * h * w, i),
                values(o * c * 9, i + 10),
                values(n * o * h * w, i + 20),
            );
            let (y, dx, dw) = (
                forward(&g, &x, &wt),
                input_grad(&g, &wt, &dy),
                weight_grad(&g, &x, &dy),
            );
            let close = |got: f32, want: f64, what: &str| {
                assert!(
                    (got as f64 - want).abs() < 1e-4,
                    "{what}: {got} vs {want} ({n},{c},{o},{h},{w})"
                );
            };
            for b in 0..n {
                for r in 0..h as isize {
                    for col in 0..w as isize {
                        for oc in 0..o {
                            let mut s = 0f64;
                            for ic in 0..c {
                                for t in 0..9 {
                                    let (kh, kw) = ((t / 3) as isize, (t % 3) as isize);
                                    let xv =
                                        at(&x[ic * h * w..], &g, c, b, r + kh - 1, col + kw - 1);
                                    s += wt[(oc * c + ic) * 9 + t] as f64 * xv;
                                }
                            }
                            close(
                                y[((b * o + oc) * h + r as usize) * w + col as usize],
                                s,
                                "y",
                            );
                        }
                        for ic in 0..c {
                            let mut s = 0f64;
                            for oc in 0..o {
                                for t in 0..9 {
                                    let (kh, kw) = ((t / 3) as isize, (t % 3) as isize);
                                    let d =
                                        at(&dy[oc * h * w..], &g, o, b, r - kh + 1, col - kw + 1);
                                    s += wt[(oc * c + ic) * 9 + t] as f64 * d;
                                }
                            }
                            close(
                                dx[((b * c + ic) * h + r as usize) * w + col as usize],
                                s,
                                "dx",
                            );
                        }
                    }
                }
            }
            for oc in 0..o {
                for ic in 0..c {
                    for t in 0..9 {
                        let (kh, kw) = ((t / 3) as isize, (t % 3) as isize);
                        let mut s = 0f64;
                        for b in 0..n {
                            for r in 0..h as isize {
                                for col in 0..w as isize {
                                    let d = dy[((b * o + oc) * h + r as usize) * w + col as usize];
                                    s += d as f64
                                        * at(&x[ic * h * w..], &g, c, b, r + kh - 1, col + kw - 1);
                                }
                            }
                        }
                        close(dw[(oc * c + ic) * 9 + t], s, "dw");
                    }
                }
            }
        }
    }
}
