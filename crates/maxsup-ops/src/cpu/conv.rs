//! f32 NCHW convolution kernels on GEMM: forward, input gradient and weight gradient.
//!
//! Work is split over threads by images; each thread walks its images in blocks of `nb` images
//! whose column matrices sit side by side (`K x nb*P`), so the late layers (P = 16) still get
//! wide GEMMs and the weight is packed once per block instead of once per image.

use super::direct3x3;
use super::gemm::{matmul, matmul_into, Mat};
use super::im2col::{col2im_add, im2col, ConvGeom};
use super::slices::{num_threads, split_range};
use super::transpose::{sum_transposed, transpose_into};
use super::uninit::{copy, fill, Output};
use super::winograd;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Per-thread scratch matrices, kept across calls: re-allocating them per convolution costs page
/// faults and kernel page clearing comparable to the im2col copy itself.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    tmp: Vec<f32>,
    dcols: Vec<f32>,
    /// The output gradient of a block transposed to pixel-major `[nb*P, O]` (weight gradient).
    dyt: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if it is already borrowed, e.g. re-entrancy).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Minimum GEMM width (columns = images * pixels) a block aims for.
const TARGET_COLS: usize = 1024;

/// Per-thread image ranges and the block size (images per GEMM).
struct Plan {
    ranges: Vec<std::ops::Range<usize>>,
    nb: usize,
    /// Threads each GEMM may use itself (> 1 only when there are fewer images than threads).
    gemm_threads: usize,
}

fn plan(g: &ConvGeom) -> Plan {
    let nt = num_threads();
    let ranges = split_range(g.n, nt);
    let per = ranges.iter().map(|r| r.len()).max().unwrap_or(1);
    let nb = TARGET_COLS.div_ceil(g.p().max(1)).clamp(1, per.max(1));
    let gemm_threads = if ranges.len() < nt { nt } else { 1 };
    Plan {
        ranges,
        nb,
        gemm_threads,
    }
}

/// Splits `buf` (n images of `per` elements) into the mutable pieces matching `ranges`.
fn split_images<'a>(
    mut buf: &'a mut [MaybeUninit<f32>],
    ranges: &[std::ops::Range<usize>],
    per: usize,
) -> Vec<&'a mut [MaybeUninit<f32>]> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let (head, tail) = buf.split_at_mut(r.len() * per);
        out.push(head);
        buf = tail;
    }
    out
}

/// Columns for images `imgs` of `x` into `cols` (K x nb*P); the pointwise case of a single image
/// needs no copy and returns the image itself.
fn columns<'a>(
    g: &ConvGeom,
    x: &'a [f32],
    imgs: std::ops::Range<usize>,
    cols: &'a mut Vec<f32>,
) -> &'a [f32] {
    let (k, p, chw) = (g.k(), g.p(), g.chw());
    if g.is_pointwise() && imgs.len() == 1 {
        return &x[imgs.start * chw..(imgs.start + 1) * chw];
    }
    let ld = imgs.len() * p;
    cols.resize(k * ld, 0.0);
    for (bi, b) in imgs.enumerate() {
        im2col(g, &x[b * chw..(b + 1) * chw], cols, ld, bi * p);
    }
    &cols[..k * ld]
}

/// Images `imgs` of `src` (each `rows x p`) side by side as one `rows x (imgs.len() * p)` block,
/// a view of `src` for a single image, else gathered into `buf`.
fn images_as_block<'a>(
    src: &'a [f32],
    rows: usize,
    p: usize,
    imgs: std::ops::Range<usize>,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    if imgs.len() == 1 {
        return &src[imgs.start * rows * p..(imgs.start + 1) * rows * p];
    }
    let ld = imgs.len() * p;
    buf.resize(rows * ld, 0.0);
    for (bi, b) in imgs.enumerate() {
        for r in 0..rows {
            let from = &src[(b * rows + r) * p..(b * rows + r + 1) * p];
            buf[r * ld + bi * p..r * ld + (bi + 1) * p].copy_from_slice(from);
        }
    }
    &buf[..rows * ld]
}

/// The inverse of [`images_as_block`]: a `rows x (n * p)` block written out as `n` images of
/// `rows x p` into unwritten slots.
fn block_as_images(dst: &mut [MaybeUninit<f32>], block: &[f32], rows: usize, p: usize, n: usize) {
    let ld = n * p;
    for bi in 0..n {
        for r in 0..rows {
            let from = &block[r * ld + bi * p..r * ld + (bi + 1) * p];
            copy(&mut dst[(bi * rows + r) * p..(bi * rows + r + 1) * p], from);
        }
    }
}

/// A convolution whose outer kernel taps read only padding for every output pixel, as the same
/// convolution with the live `ks x ks` sub-kernel starting at tap `(first, first)`.
struct LiveTaps {
    sub: ConvGeom,
    first: usize,
}

/// The live sub-kernel, when some taps read only padding (square inputs and kernels). ResNet-50's
/// last stage at 32 px runs 3x3 convolutions on 1x1 images (only the centre tap reads the image:
/// the im2col GEMM had 9x the columns, all but one ninth zeros) and a stride-2 3x3 on 2x2 images
/// (4 live taps).
fn live_taps(g: &ConvGeom) -> Option<LiveTaps> {
    if g.kh != g.kw || g.h != g.w || g.oh != g.ow {
        return None;
    }
    let reads_image = |k: usize| {
        (0..g.oh).any(|o| {
            let i = (o * g.stride + k * g.dil) as isize - g.pad as isize;
            i >= 0 && i < g.h as isize
        })
    };
    let first = (0..g.kh).find(|&k| reads_image(k))?;
    let last = (0..g.kh).rev().find(|&k| reads_image(k))?;
    if (first == 0 && last == g.kh - 1) || first * g.dil > g.pad {
        return None;
    }
    let ks = last - first + 1;
    let pad = g.pad - first * g.dil;
    let sub = ConvGeom::new(
        (g.n, g.c, g.h, g.w),
        (g.o, g.c, ks, ks),
        g.stride,
        pad,
        g.dil,
    )
    .ok()?;
    (sub.oh == g.oh && sub.ow == g.ow).then_some(LiveTaps { sub, first })
}

impl LiveTaps {
    /// `w[:, :, first.., first..]` as an `[O, C, ks, ks]` weight.
    fn weight(&self, g: &ConvGeom, w: &[f32]) -> Vec<f32> {
        let ks = self.sub.kh;
        let mut sub = Vec::with_capacity(g.o * g.c * ks * ks);
        for oc in 0..g.o * g.c {
            for i in 0..ks {
                let at = (oc * g.kh + self.first + i) * g.kw + self.first;
                sub.extend_from_slice(&w[at..at + ks]);
            }
        }
        sub
    }

    /// The full `[O, C, KH, KW]` gradient of a sub-kernel gradient (zero at the dead taps).
    fn full_grad(&self, g: &ConvGeom, dw_sub: &[f32]) -> Vec<f32> {
        let ks = self.sub.kh;
        let mut dw = vec![0f32; g.o * g.c * g.kh * g.kw];
        for oc in 0..g.o * g.c {
            for i in 0..ks {
                let at = (oc * g.kh + self.first + i) * g.kw + self.first;
                dw[at..at + ks]
                    .copy_from_slice(&dw_sub[(oc * ks + i) * ks..(oc * ks + i + 1) * ks]);
            }
        }
        dw
    }
}

/// `y[N, O, OH, OW] = conv(x[N, C, H, W], w[O, C, KH, KW])`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    if let Some(live) = live_taps(g) {
        return forward(&live.sub, x, &live.weight(g, w));
    }
    if winograd::applies(g) {
        return winograd::forward(g, x, w);
    }
    if direct3x3::applies(g) {
        return direct3x3::forward(g, x, w);
    }
    let (k, p, o) = (g.k(), g.p(), g.o);
    let mut y = Output::new(g.n * o * p);
    let pl = plan(g);
    let wm = Mat::row_major(w, o, k);
    let parts = split_images(y.slots(), &pl.ranges, o * p);
    parts
        .into_par_iter()
        .zip(pl.ranges.par_iter())
        .for_each(|(yt, r)| {
            with_scratch(|sc| {
                let Scratch { cols, tmp, .. } = sc;
                let mut b0 = r.start;
                while b0 < r.end {
                    let b1 = (b0 + pl.nb).min(r.end);
                    let nbp = (b1 - b0) * p;
                    let cm = Mat::row_major(columns(g, x, b0..b1, cols), k, nbp);
                    let yb = &mut yt[(b0 - r.start) * o * p..(b1 - r.start) * o * p];
                    if b1 - b0 == 1 {
                        matmul_into(yb, p, wm, cm, pl.gemm_threads);
                    } else {
                        tmp.resize(o * nbp, 0.0);
                        matmul(tmp, nbp, wm, cm, false, pl.gemm_threads);
                        block_as_images(yb, tmp, o, p, b1 - b0);
                    }
                    b0 = b1;
                }
            })
        });
    // SAFETY: the ranges cover all images, and each image's o x p block was written (by the
    // GEMM for a single image, else by the copies from `tmp`).
    unsafe { y.assume_init() }
}

/// Gradients of `conv` w.r.t. its input (when `want_dx`) and weight (when `want_dw`) given the
/// output gradient `dy[N, O, OH, OW]`.
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if let Some(live) = live_taps(g) {
        let (dx, dw_sub) = backward(&live.sub, x, &live.weight(g, w), dy, want_dx, want_dw);
        return (dx, dw_sub.map(|d| live.full_grad(g, &d)));
    }
    if winograd::applies(g) {
        let dx = want_dx.then(|| winograd::input_grad(g, w, dy));
        let dw = want_dw.then(|| winograd::weight_grad(g, x, dy));
        return (dx, dw);
    }
    if direct3x3::applies(g) {
        let dx = want_dx.then(|| direct3x3::input_grad(g, w, dy));
        let dw = if direct3x3::weight_grad_applies(g) {
            want_dw.then(|| direct3x3::weight_grad(g, x, dy))
        } else {
            im2col_backward(g, x, w, dy, false, want_dw).1
        };
        return (dx, dw);
    }
    im2col_backward(g, x, w, dy, want_dx, want_dw)
}

/// [`backward`] on im2col + GEMM.
fn im2col_backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, p, o, chw) = (g.k(), g.p(), g.o, g.chw());
    let pl = plan(g);
    let whole_dw = want_dw && g.n * p < WHOLE_DW_COLUMNS * pl.ranges.len();
    let partial_dw = want_dw && !whole_dw;
    let wt = Mat::row_major(w, o, k).t();
    let mut dx = Output::new(if want_dx { g.n * chw } else { 0 });
    let dx_parts: Vec<Option<&mut [MaybeUninit<f32>]>> = if want_dx {
        split_images(dx.slots(), &pl.ranges, chw)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        pl.ranges.iter().map(|_| None).collect()
    };
    let dws: Vec<Option<Vec<f32>>> = dx_parts
        .into_par_iter()
        .zip(pl.ranges.par_iter())
        .map(|(mut dxt, r)| {
            with_scratch(|sc| {
                let Scratch {
                    cols,
                    tmp: dyb,
                    dcols,
                    dyt,
                } = sc;
                // Accumulated transposed, [K, O]: see `weight_grad_block`.
                let mut dwt = if partial_dw {
                    Some(vec![0f32; o * k])
                } else {
                    None
                };
                let mut b0 = r.start;
                while b0 < r.end {
                    let b1 = (b0 + pl.nb).min(r.end);
                    let nbp = (b1 - b0) * p;
                    if let Some(dwt) = dwt.as_mut() {
                        let cm = Mat::row_major(columns(g, x, b0..b1, cols), k, nbp);
                        weight_grad_block(g, dy, b0..b1, cm, dyt, dwt, pl.gemm_threads);
                    }
                    if let Some(dxt) = dxt.as_deref_mut() {
                        let dym = Mat::row_major(images_as_block(dy, o, p, b0..b1, dyb), o, nbp);
                        let dxb = &mut dxt[(b0 - r.start) * chw..(b1 - r.start) * chw];
                        if g.is_pointwise() && b1 - b0 == 1 {
                            matmul_into(dxb, p, wt, dym, pl.gemm_threads);
                        } else if g.is_pointwise() {
                            // A pointwise layer's column gradient is the input gradient itself,
                            // images side by side: copy each image's rows out, no zero-fill + add.
                            dcols.resize(k * nbp, 0.0);
                            matmul(dcols, nbp, wt, dym, false, pl.gemm_threads);
                            block_as_images(dxb, dcols, k, p, b1 - b0);
                        } else {
                            dcols.resize(k * nbp, 0.0);
                            matmul(dcols, nbp, wt, dym, false, pl.gemm_threads);
                            // Zeroed here, per block and per thread, while it is about to be
                            // touched anyway (the output starts unwritten).
                            let dxb = fill(dxb, 0.0);
                            for bi in 0..b1 - b0 {
                                col2im_add(
                                    g,
                                    &mut dcols[..],
                                    nbp,
                                    bi * p,
                                    &mut dxb[bi * chw..(bi + 1) * chw],
                                );
                            }
                        }
                    }
                    b0 = b1;
                }
                dwt
            })
        })
        .collect();
    let dw = if whole_dw {
        Some(weight_grad_whole_batch(g, x, dy))
    } else if want_dw {
        let parts: Vec<Vec<f32>> = dws.into_iter().flatten().collect();
        Some(sum_transposed(&parts, o, k))
    } else {
        None
    };
    // SAFETY: the ranges cover all images and each image's c x h x w block was written (by the
    // pointwise GEMM, else zeroed and accumulated); without `want_dx` the buffer is empty.
    let dx = unsafe { dx.assume_init() };
    (if want_dx { Some(dx) } else { None }, dw)
}

/// Below this many output pixels per thread (images x OH x OW), the weight gradient is one GEMM
/// over the whole batch split by the `gemm` crate across threads, instead of one `[K, O]` partial
/// per thread summed afterwards: with few pixels (ResNet-50's late layers at 32 px have 1-4 per
/// image) zeroing, writing and summing the partials moved more memory than the GEMM computed
/// (~15% of a ResNet-50 step in `sum_transposed`).
const WHOLE_DW_COLUMNS: usize = 256;

/// `dW [O, K]` as one GEMM over all images (see [`WHOLE_DW_COLUMNS`]).
///
/// Two orientations, both with operands the `gemm` crate reads with unit stride: `dWᵀ [K, O] =
/// cols · dYᵀ` from a pixel-major copy of dY, then transposed (moves `O * nbp + O * K` floats), or
/// `dW = dY · colsᵀ` straight from a pixel-major copy of the columns (moves `K * nbp`). With few
/// pixels the second moves far less: for ResNet-50's last 1x1 layers at 32 px (nbp = 64, K = 2048,
/// O = 512) an eighth; the `[K, O] -> [O, K]` transposes were ~6% of its step.
fn weight_grad_whole_batch(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p, o, n) = (g.k(), g.p(), g.o, g.n);
    let nbp = n * p;
    if k * nbp <= o * k + o * nbp {
        return weight_grad_pixel_major(g, x, dy);
    }
    let (mut cols, mut dyt) = (Vec::new(), Vec::new());
    let cm = Mat::row_major(columns(g, x, 0..n, &mut cols), k, nbp);
    let mut dwt = vec![0f32; k * o];
    weight_grad_block(g, dy, 0..n, cm, &mut dyt, &mut dwt, num_threads());
    sum_transposed(&[dwt], o, k)
}

/// `dW [O, K] = dY [O, nbp] · colsᵀ`, from pixel-major columns `[nbp, K]` (see
/// [`weight_grad_whole_batch`]).
fn weight_grad_pixel_major(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p, o, n, chw) = (g.k(), g.p(), g.o, g.n, g.chw());
    let nbp = n * p;
    let mut colst = vec![0f32; nbp * k];
    if g.is_pointwise() {
        // The columns of a pointwise convolution are the images themselves.
        for b in 0..n {
            let xb = &x[b * chw..(b + 1) * chw];
            transpose_into(xb, k, p, &mut colst[b * p * k..(b + 1) * p * k]);
        }
    } else {
        let mut cols = Vec::new();
        transpose_into(columns(g, x, 0..n, &mut cols), k, nbp, &mut colst);
    }
    let mut dyb = Vec::new();
    let dym = images_as_block(dy, o, p, 0..n, &mut dyb);
    let mut dw = Output::new(o * k);
    let (a, b) = (Mat::row_major(dym, o, nbp), Mat::row_major(&colst, nbp, k));
    matmul_into(dw.slots(), k, a, b, num_threads());
    // SAFETY: `matmul_into` writes all o x k elements (row stride k).
    unsafe { dw.assume_init() }
}

/// `dwt [K, O] += cols [K, nb*P] @ dY_blockᵀ [nb*P, O]` for images `imgs`.
///
/// Computed transposed, from a pixel-major copy of dY, because both operands of `dW = dY colsᵀ`
/// are contiguous along the reduction (pixel) axis: the `gemm` crate then packs one of them with
/// scalar strided loads, which cost ~15% of a ResNet-20 training step. In this orientation both
/// operands are read with unit stride and only the small dY block is transposed.
fn weight_grad_block(
    g: &ConvGeom,
    dy: &[f32],
    imgs: std::ops::Range<usize>,
    cols: Mat,
    dyt: &mut Vec<f32>,
    dwt: &mut [f32],
    threads: usize,
) {
    let (p, o) = (g.p(), g.o);
    let nbp = imgs.len() * p;
    dyt.resize(nbp * o, 0.0);
    for (bi, b) in imgs.enumerate() {
        let src = &dy[b * o * p..(b + 1) * o * p];
        transpose_into(src, o, p, &mut dyt[bi * p * o..(bi + 1) * p * o]);
    }
    matmul(dwt, o, cols, Mat::row_major(dyt, nbp, o), true, threads);
}
