//! Winograd F(4x4, 3x3) for 3x3, stride-1, padding-1 convolutions: forward, input gradient and
//! weight gradient.
//!
//! Why: on the im2col path the GEMM micro-kernel already runs near the core's FMA peak (~58% of a
//! ResNet-18 CIFAR step), so the only way to a faster 3x3 convolution is fewer multiplications.
//! F(4x4, 3x3) computes a 4x4 output tile from a 6x6 input tile with 36 products per
//! (output, input) channel pair instead of 144: `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`, where the
//! sum over channels is, for each of the 36 Winograd points ξ, one GEMM
//! `M[ξ] (O x T) = U[ξ] (O x C) @ V[ξ] (C x T)` over the T tiles of a block of images.
//!
//! - the input gradient is the same convolution of `dY` with the weight flipped and its channel
//!   axes swapped (stride 1, padding 1), so it reuses [`forward`];
//! - the weight gradient differentiates the Winograd form itself:
//!   `dU[ξ] = Σ_t (A dY_t Aᵀ)[ξ] V[ξ]ᵀ` (one GEMM per point), then `dg = Gᵀ dU G`.
//!
//! The matrices are Lavin & Gray's for the points 0, ±1, ±2 and ∞ (arXiv 1509.09308). Tiles
//! that overhang the image (sizes not divisible by 4) read zeros and drop the outputs outside.
//! Work is split over threads by images, each thread taking blocks of images whose tiles sit side
//! by side, as on the im2col path. The transforms run on lanes of [`L`] tiles (or channels) at a
//! time so that they compile to vector arithmetic.

use super::gemm::{matmul, matmul_into, Mat};
use super::im2col::ConvGeom;
use super::slices::{num_threads, split_range};
use super::uninit::{assume_init_mut, Output};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Lanes the transforms work on at once (one AVX-512 register of f32).
const L: usize = 16;
/// Winograd points per tile (6 x 6).
const XI: usize = 36;
/// Tiles a block aims for: a block's `V` (36 x C x T floats) should stay near the L2 cache.
const TARGET_TILES: usize = 256;
/// Below this many channels (in or out) the transforms and the 36 small GEMMs cost more than the
/// multiplications they save (measured with the earlier `bench/conv_layers.sh` on the project's 2-core AVX-512 box: 16 and
/// 32 channels train 2.4-3x slower, 64 channels at 8x8 0.83x).
const MIN_CHANNELS: usize = 64;

/// Fewer tiles in the batch than this and the 36 x O x C transformed weight (and its gradient)
/// costs more than the multiplications saved; the transform's cost and the saving both grow with
/// O x C, so the break-even is a tile count (`bench/conv_kernels.sh`, 2026-12-03, 512 channels
/// forward + backward: 16 tiles 21 ms against im2col's 13, 64 tiles 24-29 ms against 51).
const MIN_TILES: usize = 32;

/// Below this output height or width a tile's 36 points cost more than the 9 taps of the
/// pixels it covers (at 2x2 they break even, at 1x1 Winograd does 4x the work).
const MIN_SIZE: usize = 4;

/// Whether the Winograd path takes this convolution: 3x3, stride 1, padding 1, no dilation,
/// enough channels both ways, and enough tiles in the batch ([`MIN_TILES`]).
/// `MAXSUP_WINOGRAD=0` in the environment turns it off (for A/B comparisons against the im2col
/// path).
pub fn applies(g: &ConvGeom) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("MAXSUP_WINOGRAD").as_deref() != Ok("0"));
    enabled
        && shape_fits(g)
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.oh >= MIN_SIZE
        && g.ow >= MIN_SIZE
        && g.n * Tiles::of(g).per_image() >= MIN_TILES
}

/// The geometry the transforms are written for.
pub fn shape_fits(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.dil == 1
}

/// 4x4 output tiles of one image.
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
}

impl Tiles {
    fn of(g: &ConvGeom) -> Self {
        Self {
            th: g.oh.div_ceil(4),
            tw: g.ow.div_ceil(4),
        }
    }
    fn per_image(&self) -> usize {
        self.th * self.tw
    }
}

/// Per-thread image ranges, images per block and threads per GEMM (as in `conv::plan`).
struct Plan {
    ranges: Vec<Range<usize>>,
    nb: usize,
    gemm_threads: usize,
}

fn plan(n: usize, tiles: Tiles) -> Plan {
    let nt = num_threads();
    let ranges = split_range(n, nt);
    let per = ranges.iter().map(|r| r.len()).max().unwrap_or(1);
    let nb = TARGET_TILES
        .div_ceil(tiles.per_image())
        .clamp(1, per.max(1));
    Plan {
        gemm_threads: if ranges.len() < nt { nt } else { 1 },
        ranges,
        nb,
    }
}

/// Per-thread scratch kept across calls (see `conv::Scratch` for why).
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

// ---- the 1-D transforms, on lanes -------------------------------------------------------------

type Lane = [f32; L];

/// `Bᵀ d` for one column of six input values.
#[inline(always)]
fn input_1d(d: [&Lane; 6], out: [&mut Lane; 6]) {
    let [d0, d1, d2, d3, d4, d5] = d;
    let [r0, r1, r2, r3, r4, r5] = out;
    for l in 0..L {
        let (a0, a1, a2, a3, a4, a5) = (d0[l], d1[l], d2[l], d3[l], d4[l], d5[l]);
        let t1 = a4 - 4.0 * a2;
        let t2 = a3 - 4.0 * a1;
        let t3 = a4 - a2;
        let t4 = 2.0 * (a3 - a1);
        r0[l] = 4.0 * a0 - 5.0 * a2 + a4;
        r1[l] = t1 + t2;
        r2[l] = t1 - t2;
        r3[l] = t3 + t4;
        r4[l] = t3 - t4;
        r5[l] = 4.0 * a1 - 5.0 * a3 + a5;
    }
}

/// `Aᵀ m` for one column of six Winograd values: four outputs.
#[inline(always)]
fn output_1d(m: [&Lane; 6], out: [&mut Lane; 4]) {
    let [m0, m1, m2, m3, m4, m5] = m;
    let [s0, s1, s2, s3] = out;
    for l in 0..L {
        let p = m1[l] + m2[l];
        let q = m1[l] - m2[l];
        let r = m3[l] + m4[l];
        let s = m3[l] - m4[l];
        s0[l] = m0[l] + p + r;
        s1[l] = q + 2.0 * s;
        s2[l] = p + 4.0 * r;
        s3[l] = q + 8.0 * s + m5[l];
    }
}

/// `A y` for one column of four output-gradient values: six Winograd values (the adjoint of
/// [`output_1d`]).
#[inline(always)]
fn grad_1d(y: [&Lane; 4], out: [&mut Lane; 6]) {
    let [y0, y1, y2, y3] = y;
    let [e0, e1, e2, e3, e4, e5] = out;
    for l in 0..L {
        let p = y0[l] + y2[l];
        let q = y1[l] + y3[l];
        let p4 = y0[l] + 4.0 * y2[l];
        let q4 = 2.0 * y1[l] + 8.0 * y3[l];
        e0[l] = y0[l];
        e1[l] = p + q;
        e2[l] = p - q;
        e3[l] = p4 + q4;
        e4[l] = p4 - q4;
        e5[l] = y3[l];
    }
}

/// Applies a 1-D transform of `N` inputs to `K` outputs along both axes of a lane tile:
/// `out = T x Tᵀ` for `x` of `N x N` lanes, `out` of `K x K` lanes (row-major).
#[inline(always)]
fn both_axes<const N: usize, const K: usize>(
    x: &[Lane],
    out: &mut [Lane],
    f: impl Fn([&Lane; N], [&mut Lane; K]),
) {
    let mut mid = [[0f32; L]; 36];
    // Columns: mid[k][j] = Σ_i T[k][i] x[i][j].
    for j in 0..N {
        let ins: [&Lane; N] = std::array::from_fn(|i| &x[i * N + j]);
        let mut col = [[0f32; L]; K];
        {
            let outs: [&mut Lane; K] = col.each_mut();
            f(ins, outs);
        }
        for k in 0..K {
            mid[k * N + j] = col[k];
        }
    }
    // Rows: out[k][m] = Σ_j mid[k][j] T[m][j].
    for k in 0..K {
        let ins: [&Lane; N] = std::array::from_fn(|j| &mid[k * N + j]);
        let mut row = [[0f32; L]; K];
        {
            let outs: [&mut Lane; K] = row.each_mut();
            f(ins, outs);
        }
        out[k * K..(k + 1) * K].copy_from_slice(&row);
    }
}

// ---- the weight transforms (small, scalar) ----------------------------------------------------

/// `G g` for one column of three taps.
#[inline(always)]
fn weight_1d(g: [&Lane; 3], out: [&mut Lane; 6]) {
    let [g0, g1, g2] = g;
    let [u0, u1, u2, u3, u4, u5] = out;
    for l in 0..L {
        let (a, b, c) = (g0[l], g1[l], g2[l]);
        u0[l] = a / 4.0;
        u1[l] = -(a + b + c) / 6.0;
        u2[l] = -(a - b + c) / 6.0;
        u3[l] = a / 24.0 + b / 12.0 + c / 6.0;
        u4[l] = a / 24.0 - b / 12.0 + c / 6.0;
        u5[l] = c;
    }
}

/// `Gᵀ u` for one column of six Winograd values (the adjoint of [`weight_1d`]).
#[inline(always)]
fn weight_grad_1d(u: [&Lane; 6], out: [&mut Lane; 3]) {
    let [u0, u1, u2, u3, u4, u5] = u;
    let [g0, g1, g2] = out;
    for l in 0..L {
        let (p, q) = (u1[l] + u2[l], u3[l] + u4[l]);
        g0[l] = u0[l] / 4.0 - p / 6.0 + q / 24.0;
        g1[l] = (u2[l] - u1[l]) / 6.0 + (u3[l] - u4[l]) / 12.0;
        g2[l] = -p / 6.0 + q / 6.0 + u5[l];
    }
}

/// `U[ξ][o][c] = (G w[o][c] Gᵀ)[ξ]` for `o x c` kernel pairs, the 3x3 kernel of a pair being
/// `w[kern(o, c) + k]` for `k` in row-major tap order (or `8 - k` when `flip`): a plain or a
/// spatially flipped, channel-transposed weight. In lanes of [`L`] input channels, so that each
/// of the 36 planes is written contiguously (a scatter pair by pair cost more than the GEMMs on
/// ResNet-18's 512-channel layers).
fn transform_weight(
    o: usize,
    c: usize,
    w: &[f32],
    kern: impl Fn(usize, usize) -> usize + Sync,
    flip: bool,
) -> Vec<f32> {
    let mut u = Output::new(XI * o * c);
    let planes = SharedPlanes(u.slots().as_mut_ptr(), o * c);
    (0..o)
        .into_par_iter()
        .for_each(|oi| weight_row(oi, c, w, &kern, flip, &planes));
    // SAFETY: every (ξ, o, c) was written: each task covers all c of its o for all 36 planes.
    unsafe { u.assume_init() }
}

simd_kernel! {
    /// Row `oi` of all 36 planes of [`transform_weight`].
    fn weight_row(
        oi: usize,
        c: usize,
        w: &[f32],
        kern: &(impl Fn(usize, usize) -> usize + Sync),
        flip: bool,
        planes: &SharedPlanes,
    ) {
        let mut g = [[0f32; L]; 9];
        let mut out = [[0f32; L]; 36];
        for c0 in (0..c).step_by(L) {
            let count = L.min(c - c0);
            for l in 0..count {
                let at = kern(oi, c0 + l);
                for (k, tap) in g.iter_mut().enumerate() {
                    tap[l] = w[at + if flip { 8 - k } else { k }];
                }
            }
            both_axes::<3, 6>(&g, &mut out, weight_1d);
            for (xi, lane) in out.iter().enumerate() {
                // SAFETY: row `oi` of plane `xi`, columns `c0 .. c0 + count`: in bounds, and
                // written by this task alone (rows are split by `oi`).
                unsafe { planes.write(xi, oi * c + c0, &lane[..count]) };
            }
        }
    }
}

/// The 36 planes of an [`Output`], for tasks that write disjoint parts of every plane.
struct SharedPlanes(*mut MaybeUninit<f32>, usize);

// SAFETY: only used for writes to disjoint ranges from different tasks (see `write`).
unsafe impl Sync for SharedPlanes {}

impl SharedPlanes {
    /// Writes `vals` at offset `at` of plane `xi`.
    ///
    /// # Safety
    /// `at + vals.len()` must fit the plane, and no other task may write those slots.
    unsafe fn write(&self, xi: usize, at: usize, vals: &[f32]) {
        debug_assert!(at + vals.len() <= self.1);
        // SAFETY: by the caller's contract the range is in bounds and exclusively ours.
        unsafe {
            let dst = self.0.add(xi * self.1 + at).cast::<f32>();
            std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, vals.len());
        }
    }
}

// ---- the data transforms ----------------------------------------------------------------------

/// Where tile `t` of a block starting at image `b0` reads: the offset of its image in the batch
/// (in planes of `h * w`, times the channel count by the caller), and its input origin.
#[derive(Clone, Copy)]
struct TileAt {
    img: usize,
    y0: isize,
    x0: isize,
    /// The rows and columns of the 6x6 patch inside the image.
    rows: (usize, usize),
    cols: (usize, usize),
}

fn tile_origins(g: &ConvGeom, tiles: Tiles, imgs: Range<usize>) -> Vec<TileAt> {
    let inside = |o: isize, len: usize| {
        let lo = (-o).clamp(0, 6) as usize;
        let hi = (len as isize - o).clamp(lo as isize, 6) as usize;
        (lo, hi)
    };
    let mut out = Vec::with_capacity(imgs.len() * tiles.per_image());
    for img in imgs {
        for ty in 0..tiles.th {
            for tx in 0..tiles.tw {
                let (y0, x0) = (4 * ty as isize - 1, 4 * tx as isize - 1);
                out.push(TileAt {
                    img,
                    y0,
                    x0,
                    rows: inside(y0, g.h),
                    cols: inside(x0, g.w),
                });
            }
        }
    }
    out
}

/// Stores the first `count` lanes at the start of `dst` (a fixed-size copy when all are used:
/// a `memcpy` call per lane costs more than the transform).
#[inline(always)]
fn put(dst: &mut [f32], lane: &Lane, count: usize) {
    if count == L {
        dst[..L].copy_from_slice(lane);
    } else {
        dst[..count].copy_from_slice(&lane[..count]);
    }
}

/// Loads `count` values from the start of `src` into a lane (see [`put`]).
#[inline(always)]
fn get(lane: &mut Lane, src: &[f32], count: usize) {
    if count == L {
        lane.copy_from_slice(&src[..L]);
    } else {
        lane[..count].copy_from_slice(&src[..count]);
    }
}

simd_kernel! {
    /// `V[ξ][c][t] = (Bᵀ d_t B)[ξ]` for the 6x6 input patch `d_t` of every tile of the block
    /// (`v` holds 36 x C x T floats, T = `at.len()`); `x` is the whole batch `[N, C, H, W]`.
    fn input_transform(g: &ConvGeom, x: &[f32], at: &[TileAt], v: &mut [f32]) {
        let (c_n, w, tn) = (g.c, g.w as isize, at.len());
        let hw = g.h * g.w;
        let mut d = [[0f32; L]; 36];
        let mut out = [[0f32; L]; 36];
        for c in 0..c_n {
            for t0 in (0..tn).step_by(L) {
                let count = L.min(tn - t0);
                for (l, a) in at[t0..t0 + count].iter().enumerate() {
                    let plane = &x[(a.img * c_n + c) * hw..(a.img * c_n + c + 1) * hw];
                    let inside = a.rows == (0, 6) && a.cols == (0, 6);
                    if inside {
                        for i in 0..6 {
                            let row = &plane[((a.y0 + i as isize) * w + a.x0) as usize..][..6];
                            for j in 0..6 {
                                d[i * 6 + j][l] = row[j];
                            }
                        }
                    } else {
                        for lane in d.iter_mut() {
                            lane[l] = 0.0;
                        }
                        for i in a.rows.0..a.rows.1 {
                            let yy = (a.y0 + i as isize) as usize;
                            for j in a.cols.0..a.cols.1 {
                                let xx = (a.x0 + j as isize) as usize;
                                d[i * 6 + j][l] = plane[yy * g.w + xx];
                            }
                        }
                    }
                }
                if count < L {
                    for lane in d.iter_mut() {
                        lane[count..].fill(0.0);
                    }
                }
                both_axes::<6, 6>(&d, &mut out, input_1d);
                for (xi, lane) in out.iter().enumerate() {
                    put(&mut v[(xi * c_n + c) * tn + t0..], lane, count);
                }
            }
        }
    }
}

simd_kernel! {
    /// `y_t = Aᵀ M_t A` for every tile and output channel of the block: `m` holds 36 x O x T
    /// floats, `y` the block's images `[nb, O, OH, OW]` (every pixel written exactly once).
    fn output_transform(g: &ConvGeom, at: &[TileAt], b0: usize, m: &[f32], y: &mut [MaybeUninit<f32>]) {
        let (o_n, oh, ow, tn) = (g.o, g.oh as isize, g.ow as isize, at.len());
        let p = g.p();
        let mut mm = [[0f32; L]; 36];
        let mut out = [[0f32; L]; 36];
        for o in 0..o_n {
            for t0 in (0..tn).step_by(L) {
                let count = L.min(tn - t0);
                for (xi, lane) in mm.iter_mut().enumerate() {
                    get(lane, &m[(xi * o_n + o) * tn + t0..], count);
                }
                both_axes::<6, 4>(&mm, &mut out, output_1d);
                for (l, a) in at[t0..t0 + count].iter().enumerate() {
                    let plane = &mut y[((a.img - b0) * o_n + o) * p..][..p];
                    let (oy, ox) = (a.y0 + 1, a.x0 + 1);
                    let full = oy + 4 <= oh && ox + 4 <= ow;
                    for i in 0..4 {
                        let yy = oy + i as isize;
                        if !full && yy >= oh {
                            break;
                        }
                        for j in 0..4 {
                            let xx = ox + j as isize;
                            if full || xx < ow {
                                plane[(yy * ow + xx) as usize].write(out[i * 4 + j][l]);
                            }
                        }
                    }
                }
            }
        }
    }
}

simd_kernel! {
    /// `dMᵀ[ξ][t][o] = (A dY_t Aᵀ)[ξ]` for every tile of the block, in lanes of output channels;
    /// `dy` is the whole batch's output gradient `[N, O, OH, OW]`, `dmt` holds 36 x T x O floats.
    fn grad_transform(g: &ConvGeom, dy: &[f32], at: &[TileAt], dmt: &mut [f32]) {
        let (o_n, oh, ow, tn) = (g.o, g.oh as isize, g.ow as isize, at.len());
        let p = g.p();
        let mut d = [[0f32; L]; 16];
        let mut out = [[0f32; L]; 36];
        for (t, a) in at.iter().enumerate() {
            let (oy, ox) = (a.y0 + 1, a.x0 + 1);
            let full = oy + 4 <= oh && ox + 4 <= ow;
            for o0 in (0..o_n).step_by(L) {
                let count = L.min(o_n - o0);
                for l in 0..count {
                    let plane = &dy[(a.img * o_n + o0 + l) * p..][..p];
                    for i in 0..4 {
                        let yy = oy + i as isize;
                        for j in 0..4 {
                            let xx = ox + j as isize;
                            d[i * 4 + j][l] = if full || (yy < oh && xx < ow) {
                                plane[(yy * ow + xx) as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
                if count < L {
                    for lane in d.iter_mut() {
                        lane[count..].fill(0.0);
                    }
                }
                both_axes::<4, 6>(&d, &mut out, grad_1d);
                for (xi, lane) in out.iter().enumerate() {
                    put(&mut dmt[(xi * tn + t) * o_n + o0..], lane, count);
                }
            }
        }
    }
}

// ---- the three convolutions -------------------------------------------------------------------

/// Splits `buf` (n images of `per` elements) into the pieces matching `ranges`.
fn split_images<'a>(
    mut buf: &'a mut [MaybeUninit<f32>],
    ranges: &[Range<usize>],
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

/// `y[N, O, H, W] = conv3x3(x[N, C, H, W], w[O, C, 3, 3])`, stride 1, padding 1.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let u = transform_weight(g.o, g.c, w, |o, c| (o * g.c + c) * 9, false);
    forward_transformed(g, x, &u)
}

/// `dx[N, C, H, W]` of `conv3x3(x, w)` given `dy[N, O, H, W]`: the convolution of `dy` with the
/// weight flipped in space and transposed in channels.
pub fn input_grad(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let gt = ConvGeom {
        c: g.o,
        o: g.c,
        h: g.oh,
        w: g.ow,
        oh: g.h,
        ow: g.w,
        ..*g
    };
    let u = transform_weight(g.c, g.o, w, |c, o| (o * g.c + c) * 9, true);
    forward_transformed(&gt, dy, &u)
}

fn forward_transformed(g: &ConvGeom, x: &[f32], u: &[f32]) -> Vec<f32> {
    let (c, o, p) = (g.c, g.o, g.p());
    let tiles = Tiles::of(g);
    let pl = plan(g.n, tiles);
    let mut y = Output::new(g.n * o * p);
    let parts = split_images(y.slots(), &pl.ranges, o * p);
    parts
        .into_par_iter()
        .zip(pl.ranges.par_iter())
        .for_each(|(yt, r)| {
            with_scratch(|sc| {
                let mut b0 = r.start;
                while b0 < r.end {
                    let b1 = (b0 + pl.nb).min(r.end);
                    let at = tile_origins(g, tiles, b0..b1);
                    let tn = at.len();
                    sc.v.resize(XI * c * tn, 0.0);
                    sc.m.resize(XI * o * tn, 0.0);
                    input_transform(g, x, &at, &mut sc.v);
                    for xi in 0..XI {
                        let uxi = Mat::row_major(&u[xi * o * c..(xi + 1) * o * c], o, c);
                        let vxi = Mat::row_major(&sc.v[xi * c * tn..(xi + 1) * c * tn], c, tn);
                        let mxi = &mut sc.m[xi * o * tn..(xi + 1) * o * tn];
                        matmul(mxi, tn, uxi, vxi, false, pl.gemm_threads);
                    }
                    let yb = &mut yt[(b0 - r.start) * o * p..(b1 - r.start) * o * p];
                    output_transform(g, &at, b0, &sc.m, yb);
                    b0 = b1;
                }
            })
        });
    // SAFETY: the ranges cover all images, and every tile's output transform wrote each of its
    // pixels inside the image; the tiles cover every pixel of every image.
    unsafe { y.assume_init() }
}

/// `dw[O, C, 3, 3]` of `conv3x3(x, w)` given `dy[N, O, H, W]`.
pub fn weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let tiles = Tiles::of(g);
    let pl = plan(g.n, tiles);
    // Per-thread partial gradients larger than the batch's transformed data: by points.
    if pl.ranges.len() * c * o > (c + o) * g.n * tiles.per_image() {
        weight_grad_by_points(g, x, dy, tiles, &pl)
    } else {
        weight_grad_by_threads(g, x, dy, tiles, &pl)
    }
}

/// [`weight_grad`] with the batch split over threads by images, each thread summing the
/// gradient of its blocks of tiles into its own `dUᵀ`, and the threads' parts summed at the end.
fn weight_grad_by_threads(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    tiles: Tiles,
    pl: &Plan,
) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    // Per thread: dUᵀ[ξ][c][o], summed over its blocks.
    let parts: Vec<Vec<f32>> = pl
        .ranges
        .par_iter()
        .map(|r| {
            with_scratch(|sc| {
                let mut dut = vec![0f32; XI * c * o];
                let mut b0 = r.start;
                while b0 < r.end {
                    let b1 = (b0 + pl.nb).min(r.end);
                    let at = tile_origins(g, tiles, b0..b1);
                    let tn = at.len();
                    sc.v.resize(XI * c * tn, 0.0);
                    sc.m.resize(XI * tn * o, 0.0);
                    input_transform(g, x, &at, &mut sc.v);
                    grad_transform(g, dy, &at, &mut sc.m);
                    for xi in 0..XI {
                        let vxi = Mat::row_major(&sc.v[xi * c * tn..(xi + 1) * c * tn], c, tn);
                        let dmxi = Mat::row_major(&sc.m[xi * tn * o..(xi + 1) * tn * o], tn, o);
                        let dst = &mut dut[xi * c * o..(xi + 1) * c * o];
                        matmul(dst, o, vxi, dmxi, true, pl.gemm_threads);
                    }
                    b0 = b1;
                }
                dut
            })
        })
        .collect();
    if parts.is_empty() {
        return vec![0f32; o * c * 9]; // an empty batch
    }
    weight_from_points(c, o, &parts)
}

/// `dw[o][c] = Gᵀ dU[o][c] G` from parts `dUᵀ[ξ][c][o]` summed in order; in lanes of output
/// channels, each task owning `L` rows of dw and reading every plane of dUᵀ with unit stride.
fn weight_from_points(c: usize, o: usize, parts: &[Vec<f32>]) -> Vec<f32> {
    let mut dw = Output::new(o * c * 9);
    dw.slots()
        .par_chunks_mut(L * c * 9)
        .enumerate()
        .for_each(|(chunk, rows)| weight_grad_rows(chunk * L, c, o, parts, rows));
    // SAFETY: the chunks cover all o rows, and each row's c x 9 entries were written.
    unsafe { dw.assume_init() }
}

/// [`weight_grad`] for layers whose weight outweighs their data (512 channels on 4x4 or 7x7
/// images): each thread transforms the tiles of its images, then each Winograd point's gradient
/// `dUᵀ[ξ] = Σ_threads V[ξ] dM[ξ]ᵀ` is one task, written once. The per-thread path instead gives
/// every thread a whole `36 x C x O` partial gradient (38 MB at 512 channels) to zero, accumulate
/// and sum, for a handful of tiles each.
fn weight_grad_by_points(g: &ConvGeom, x: &[f32], dy: &[f32], tiles: Tiles, pl: &Plan) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    // Per thread: V[ξ][c][t] and dMᵀ[ξ][t][o] for the tiles of its images.
    let parts: Vec<(usize, Vec<f32>, Vec<f32>)> = pl
        .ranges
        .par_iter()
        .map(|r| {
            let at = tile_origins(g, tiles, r.clone());
            let tn = at.len();
            let mut v = vec![0f32; XI * c * tn];
            let mut dmt = vec![0f32; XI * tn * o];
            input_transform(g, x, &at, &mut v);
            grad_transform(g, dy, &at, &mut dmt);
            (tn, v, dmt)
        })
        .collect();
    if parts.is_empty() {
        return vec![0f32; o * c * 9]; // an empty batch
    }
    let mut dut = Output::new(XI * c * o);
    let (first, rest) = parts.split_first().expect("not empty");
    // Point ξ's V (C x T) and dMᵀ (T x O) of one part.
    fn point(
        xi: usize,
        c: usize,
        o: usize,
        part: &(usize, Vec<f32>, Vec<f32>),
    ) -> (Mat<'_>, Mat<'_>) {
        let (tn, v, dmt) = part;
        let vxi = Mat::row_major(&v[xi * c * tn..(xi + 1) * c * tn], c, *tn);
        let dmxi = Mat::row_major(&dmt[xi * tn * o..(xi + 1) * tn * o], *tn, o);
        (vxi, dmxi)
    }
    dut.slots()
        .par_chunks_mut(c * o)
        .enumerate()
        .for_each(|(xi, plane)| {
            let (vxi, dmxi) = point(xi, c, o, first);
            matmul_into(plane, o, vxi, dmxi, 1);
            // SAFETY: the GEMM into unwritten slots wrote all of the c x o plane.
            let plane = unsafe { assume_init_mut(plane) };
            for part in rest {
                let (vxi, dmxi) = point(xi, c, o, part);
                matmul(plane, o, vxi, dmxi, true, 1);
            }
        });
    // SAFETY: with at least one part, the first part's GEMM wrote every slot of every plane.
    weight_from_points(c, o, &[unsafe { dut.assume_init() }])
}

simd_kernel! {
    /// Rows `o0 ..` of the weight gradient (`rows` holds `count x C x 9` slots) from the threads'
    /// `dUᵀ[ξ][c][o]` parts.
    fn weight_grad_rows(o0: usize, c: usize, o: usize, parts: &[Vec<f32>], rows: &mut [MaybeUninit<f32>]) {
        let count = rows.len() / (c * 9);
        let mut du = [[0f32; L]; 36];
        let mut out = [[0f32; L]; 36];
        for ci in 0..c {
            for (xi, lane) in du.iter_mut().enumerate() {
                let at = (xi * c + ci) * o + o0;
                get(lane, &parts[0][at..], count);
                for part in &parts[1..] {
                    let src = &part[at..at + count];
                    for (d, s) in lane.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
            both_axes::<6, 3>(&du, &mut out, weight_grad_1d);
            for l in 0..count {
                for (k, tap) in out[..9].iter().enumerate() {
                    rows[(l * c + ci) * 9 + k].write(tap[l]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3x3 correlation, stride 1, padding 1, in f64.
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.o * g.p()];
        for n in 0..g.n {
            for o in 0..g.o {
                for i in 0..g.oh {
                    for j in 0..g.ow {
                        let mut s = 0f64;
                        for c in 0..g.c {
                            for ki in 0..3 {
                                for kj in 0..3 {
                                    let (yy, xx) = (i + ki, j + kj);
                                    if yy == 0 || xx == 0 || yy > g.h || xx > g.w {
                                        continue;
                                    }
                                    let xv = x[((n * g.c + c) * g.h + yy - 1) * g.w + xx - 1];
                                    s += xv as f64 * w[((o * g.c + c) * 3 + ki) * 3 + kj] as f64;
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + i) * g.ow + j] = s;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_rel(a: &[f32], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - y).abs())
            .fold(0f64, f64::max)
            / scale
    }

    #[test]
    fn takes_wide_3x3_layers_with_enough_tiles_only() {
        let geom =
            |n, c, hw, o, k, s, p| ConvGeom::new((n, c, hw, hw), (o, c, k, k), s, p, 1).unwrap();
        assert!(applies(&geom(64, 64, 32, 64, 3, 1, 1)));
        assert!(applies(&geom(64, 128, 4, 128, 3, 1, 1)));
        assert!(!applies(&geom(128, 32, 16, 32, 3, 1, 1)), "narrow");
        assert!(
            !applies(&geom(64, 256, 2, 256, 3, 1, 1)),
            "smaller than a tile"
        );
        assert!(applies(&geom(64, 512, 4, 512, 3, 1, 1)), "64 tiles");
        assert!(applies(&geom(8, 512, 8, 512, 3, 1, 1)), "32 tiles");
        assert!(
            !applies(&geom(16, 512, 4, 512, 3, 1, 1)),
            "16 tiles: the weight transform outweighs the saving"
        );
        assert!(!applies(&geom(64, 64, 32, 64, 3, 2, 1)), "stride 2");
        assert!(!applies(&geom(64, 64, 32, 64, 5, 1, 2)), "5x5");
    }

    #[test]
    fn forward_and_gradients_match_direct_sums_on_ragged_tiles() {
        // Sizes 4k, 4k+1..3 (tiles overhanging the image), one row of tiles, and a block of many
        // small images.
        for &(n, c, h, w, o) in &[
            (2, 3, 8, 8, 5),
            (3, 4, 7, 9, 6),
            (2, 2, 5, 6, 17),
            (9, 3, 2, 3, 4),
            (2, 18, 4, 5, 3),
        ] {
            let g = ConvGeom::new((n, c, h, w), (o, c, 3, 3), 1, 1, 1).unwrap();
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * 9, 2);
            let dy = values(n * o * h * w, 3);
            let y = forward(&g, &x, &wt);
            assert!(
                max_rel(&y, &naive(&g, &x, &wt)) < 1e-5,
                "forward {:?}",
                (n, c, h, w, o)
            );
            // dx[n][c][p] = Σ dy · ∂y/∂x and dw likewise, from the direct sums' linearity:
            // <dy, conv(x, w)> is bilinear, so its gradients are exact direct sums.
            let mut dx = vec![0f64; x.len()];
            let mut dwr = vec![0f64; wt.len()];
            for b in 0..n {
                for oc in 0..o {
                    for i in 0..h {
                        for j in 0..w {
                            let gy = dy[((b * o + oc) * h + i) * w + j] as f64;
                            for cc in 0..c {
                                for ki in 0..3 {
                                    for kj in 0..3 {
                                        let (yy, xx) = (i + ki, j + kj);
                                        if yy == 0 || xx == 0 || yy > h || xx > w {
                                            continue;
                                        }
                                        let xi = ((b * c + cc) * h + yy - 1) * w + xx - 1;
                                        let wi = ((oc * c + cc) * 3 + ki) * 3 + kj;
                                        dx[xi] += gy * wt[wi] as f64;
                                        dwr[wi] += gy * x[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            assert!(
                max_rel(&input_grad(&g, &wt, &dy), &dx) < 1e-5,
                "dx {:?}",
                (n, c, h, w, o)
            );
            assert!(
                max_rel(&weight_grad(&g, &x, &dy), &dwr) < 1e-5,
                "dw {:?}",
                (n, c, h, w, o)
            );
            // Both ways of splitting the weight gradient, whichever `weight_grad` picked, with
            // the batch over one and over several threads' parts.
            let tiles = Tiles::of(&g);
            for parts in [1, 2, 3] {
                let pl = Plan {
                    ranges: split_range(n, parts),
                    nb: 2,
                    gemm_threads: 1,
                };
                let by_threads = weight_grad_by_threads(&g, &x, &dy, tiles, &pl);
                let by_points = weight_grad_by_points(&g, &x, &dy, tiles, &pl);
                let at = (n, c, h, w, o, parts);
                assert!(max_rel(&by_threads, &dwr) < 1e-5, "dw by threads {at:?}");
                assert!(max_rel(&by_points, &dwr) < 1e-5, "dw by points {at:?}");
            }
        }
    }
}
