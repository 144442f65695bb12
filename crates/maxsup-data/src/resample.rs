//! Separable, antialiased resampling of an image region, with the same coefficients as Pillow's
//! `Image.resize` (which torchvision calls on PIL images): when shrinking, the filter support widens
//! by the scale factor, so downscaling averages all covered pixels instead of aliasing.
//!
//! Like Pillow, the horizontal pass is rounded to 8 bits before the vertical pass, and the result is
//! 8-bit; our weights are `f32` rather than Pillow's fixed point, so values can differ by one level.

use crate::image::RgbImage;

/// Resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Triangle filter, support 1 (PIL `BILINEAR`, torchvision's default).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (PIL `BICUBIC`, DeiT's `--train-interpolation bicubic`).
    Bicubic,
}

impl Interpolation {
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => (1.0 - x).max(0.0),
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// A rectangle in pixel coordinates: the JPEG decoder's region type, so that a crop passes to
/// the region decoder as it is.
pub use maxsup_jpeg::Region as Rect;

/// Filter taps of one axis: for output i, source pixels `start[i] .. start[i] + taps` with weights
/// `weights[i * taps ..]` (zero-padded to a common tap count).
struct AxisTaps {
    start: Vec<usize>,
    /// Non-zero taps of each output (at most `taps`), so loops skip the padding.
    count: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

/// Pillow's `precompute_coeffs` for a source span of `in_len` pixels (offset `in_offset` in the
/// image) resized to `out_full` pixels, restricted to the outputs in `out_range`.
fn axis_taps(
    in_offset: usize,
    in_len: usize,
    out_full: usize,
    out_range: std::ops::Range<usize>,
    filter: Interpolation,
) -> AxisTaps {
    let scale = in_len as f64 / out_full as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let taps = (support.ceil() as usize) * 2 + 1;
    let mut start = Vec::with_capacity(out_range.len());
    let mut count = Vec::with_capacity(out_range.len());
    let mut weights = vec![0f32; out_range.len() * taps];
    let mut w = Vec::with_capacity(taps);
    for (k, i) in out_range.enumerate() {
        let center = (i as f64 + 0.5) * scale;
        // `as i64` truncates toward zero exactly like Pillow's `(int)` cast.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
        w.clear();
        let mut total = 0.0;
        for x in lo..hi {
            let v = filter.weight((x as f64 - center + 0.5) / filter_scale);
            w.push(v);
            total += v;
        }
        for (j, v) in w.iter().enumerate().take(taps) {
            weights[k * taps + j] = if total != 0.0 {
                (v / total) as f32
            } else {
                0.0
            };
        }
        start.push(in_offset + lo);
        count.push(w.len().min(taps));
    }
    AxisTaps {
        start,
        count,
        taps,
        weights,
    }
}

/// Rounds half up and clamps to 8 bits. `(v + 0.5) as u8` instead of `f32::round`: without SSE4.1
/// `round` is a libm call, and this runs for every intermediate and output value (it was a third of
/// the transform's time).
#[inline]
fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

/// Source rows converted together in the horizontal pass: each source pixel becomes `ROWS` groups
/// of 4 floats (R, G, B and a lane whose result is discarded), one group per row, so one tap of one
/// output pixel is a multiply and an add over `4 * ROWS` contiguous floats with a single weight.
const ROWS: usize = 4;
type RowsPx = [f32; 4 * ROWS];

/// Taps of one output pixel of the horizontal pass: `n` source pixels from `start` (relative to the
/// first converted source column), weights at `weights` in `AxisTaps::weights`.
///
/// `n` is the same for all outputs, the largest count: the extra weights are zero (the padding of
/// `AxisTaps::weights`) on finite pixels (zero-padded past the converted columns), which adds +0
/// and changes no result, and tap loops with a fixed trip count are predicted perfectly.
#[derive(Clone, Copy)]
struct HTap {
    start: usize,
    n: usize,
    weights: usize,
}

/// Everything both passes need, with all indices checked against the buffers once, up front.
///
/// The passes are interleaved: the horizontal pass produces intermediate rows (groups of `ROWS`)
/// just before the first output row that needs them, into a ring buffer of `ring` rows, so the
/// intermediate image stays in cache instead of going through memory.
struct Plan<'a> {
    hx: &'a AxisTaps,
    /// Horizontal taps in output order (mirrored when flipping).
    htaps: Vec<HTap>,
    /// Source columns `col_lo .. col_lo + cols` and rows `row_lo .. row_lo + nrows` are read.
    col_lo: usize,
    cols: usize,
    /// Converted pixels, `cols` and the zero padding that the last taps read.
    px_len: usize,
    row_lo: usize,
    nrows: usize,
    /// Output row length in bytes (`3 * ow`); rows of the intermediate image have two more bytes,
    /// so that the AVX2 code can store two pixels as 8 bytes.
    stride: usize,
    tmp_stride: usize,
    /// Rows of the ring buffer (a multiple of `ROWS`): intermediate row `r` is at `r % ring`.
    ring: usize,
    /// Vertical taps with non-zero weight: output row `j` sums `(weight, byte offset of a row in
    /// the ring buffer)` over `vtaps[vrange[j]..vrange[j + 1]]`, in order.
    vtaps: Vec<(f32, usize)>,
    vrange: Vec<usize>,
    /// Intermediate rows `0 .. ready[j]` must be computed before output row `j`.
    ready: Vec<usize>,
}

impl<'a> Plan<'a> {
    fn new(img: &RgbImage, hx: &'a AxisTaps, vy: &AxisTaps, ow: usize, flip: bool) -> Plan<'a> {
        // Source columns and rows that the taps touch.
        let span = |t: &AxisTaps| {
            let lo = t.start.iter().copied().min().unwrap_or(0);
            let hi = t.start.iter().zip(&t.count).map(|(&s, &n)| s + n).max();
            (lo, hi.unwrap_or(lo).max(lo))
        };
        let (col_lo, col_hi) = span(hx);
        let (row_lo, row_hi) = span(vy);
        // The passes read these without further bounds checks.
        assert!(
            col_hi <= img.width && row_hi <= img.height,
            "source rect outside the image"
        );
        let hn = hx.count.iter().copied().max().unwrap_or(0);
        let htaps = (0..ow)
            .map(|o| {
                let i = if flip { ow - 1 - o } else { o };
                HTap {
                    start: hx.start[i] - col_lo,
                    n: hn,
                    weights: i * hx.taps,
                }
            })
            .collect();
        let stride = ow * 3;
        let tmp_stride = stride + 2;
        // Rows computed (whole groups) before output row j, and the ring size that keeps all the
        // rows that j reads.
        let mut ready = Vec::with_capacity(vy.start.len());
        let mut ring = ROWS;
        let mut done = 0;
        for (&s, &n) in vy.start.iter().zip(&vy.count) {
            let (s, end) = (s - row_lo, s + n - row_lo);
            done = done.max(end.div_ceil(ROWS) * ROWS);
            ready.push(done);
            ring = ring.max((done - s).div_ceil(ROWS) * ROWS);
        }
        let mut vtaps = Vec::new();
        let mut vrange = vec![0];
        for (j, (&s, &n)) in vy.start.iter().zip(&vy.count).enumerate() {
            for k in 0..n {
                let wk = vy.weights[j * vy.taps + k];
                // Zero weights are skipped (as Pillow's fixed-point code effectively does).
                if wk != 0.0 {
                    vtaps.push((wk, (s + k - row_lo) % ring * tmp_stride));
                }
            }
            vrange.push(vtaps.len());
        }
        Plan {
            hx,
            htaps,
            col_lo,
            cols: col_hi - col_lo,
            px_len: col_hi - col_lo + hn,
            row_lo,
            nrows: row_hi - row_lo,
            stride,
            tmp_stride,
            ring,
            vtaps,
            vrange,
            ready,
        }
    }

    /// The `ROWS` source rows from intermediate row `r0`, restricted to the converted columns plus
    /// up to 16 following bytes where the image has them, and how many of them exist (rows past
    /// the last one repeat it).
    fn source_rows<'i>(&self, img: &'i RgbImage, r0: usize) -> ([&'i [u8]; ROWS], usize) {
        let rows = ROWS.min(self.nrows - r0);
        let row = |g: usize| {
            let a = ((self.row_lo + r0 + g.min(rows - 1)) * img.width + self.col_lo) * 3;
            &img.data[a..(a + self.cols * 3 + 16).min(img.data.len())]
        };
        (std::array::from_fn(row), rows)
    }

    /// The ring buffer rows of the group starting at intermediate row `r0`.
    fn group_range(&self, r0: usize) -> std::ops::Range<usize> {
        let slot = r0 % self.ring;
        slot * self.tmp_stride..(slot + ROWS) * self.tmp_stride
    }
}

/// Resizes `src_rect` of `img` to `out_w x out_h` and returns the window `window` of that resized
/// image (e.g. the whole output for RandomResizedCrop, or a center crop of a shorter-side resize).
/// `flip` mirrors the result horizontally (cheaper than a separate pass).
///
/// Each value is computed as `to_u8(((0 + w0 * p0) + w1 * p1) + ...)` in `f32`, products and sums
/// rounded separately, whatever the vector width, so the AVX2 and portable paths agree exactly.
pub fn resample(
    img: &RgbImage,
    src_rect: Rect,
    out_w: usize,
    out_h: usize,
    window: Rect,
    filter: Interpolation,
    flip: bool,
) -> RgbImage {
    resample_with(img, src_rect, out_w, out_h, window, filter, flip, true)
}

/// `resample`, with the AVX2 code only when `simd` (and the CPU has it).
#[allow(clippy::too_many_arguments)]
fn resample_with(
    img: &RgbImage,
    src_rect: Rect,
    out_w: usize,
    out_h: usize,
    window: Rect,
    filter: Interpolation,
    flip: bool,
    simd: bool,
) -> RgbImage {
    debug_assert!(
        src_rect.x + src_rect.width <= img.width && src_rect.y + src_rect.height <= img.height
    );
    debug_assert!(window.x + window.width <= out_w && window.y + window.height <= out_h);
    let hx = axis_taps(
        src_rect.x,
        src_rect.width,
        out_w,
        window.x..window.x + window.width,
        filter,
    );
    let vy = axis_taps(
        src_rect.y,
        src_rect.height,
        out_h,
        window.y..window.y + window.height,
        filter,
    );
    let (ow, oh) = (window.width, window.height);
    let mut out = vec![0u8; oh * ow * 3];
    if ow == 0 {
        return RgbImage {
            width: ow,
            height: oh,
            data: out,
        };
    }
    let plan = Plan::new(img, &hx, &vy, ow, flip);
    let mut tmp = vec![0u8; plan.ring * plan.tmp_stride];
    if simd && avx2_available() {
        // SAFETY: the CPU supports AVX2.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx2::run(img, &plan, &mut tmp, &mut out)
        };
    } else {
        run(img, &plan, &mut tmp, &mut out);
    }
    RgbImage {
        width: ow,
        height: oh,
        data: out,
    }
}

/// Whether the AVX2 code can run (detected once, then cached by std).
fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Both passes, portable code.
fn run(img: &RgbImage, plan: &Plan, tmp: &mut [u8], out: &mut [u8]) {
    let mut px: Vec<RowsPx> = vec![[0.0; 4 * ROWS]; plan.px_len];
    let mut done = 0;
    for (j, dst) in out.chunks_exact_mut(plan.stride).enumerate() {
        while done < plan.ready[j] {
            horizontal(img, plan, done, &mut px, &mut tmp[plan.group_range(done)]);
            done += ROWS;
        }
        vertical(plan, j, tmp, dst);
    }
}

/// Horizontal pass, portable: the group of intermediate rows from `r0` into `dst`.
fn horizontal(img: &RgbImage, plan: &Plan, r0: usize, px: &mut [RowsPx], dst: &mut [u8]) {
    if plan.cols == 0 {
        return; // All taps are empty: the intermediate rows stay zero.
    }
    let (src, rows) = plan.source_rows(img, r0);
    for (g, src) in src.iter().enumerate() {
        for (p, s) in px[..plan.cols].iter_mut().zip(src.chunks_exact(3)) {
            p[4 * g..4 * g + 4].copy_from_slice(&[s[0] as f32, s[1] as f32, s[2] as f32, 0.0]);
        }
    }
    for (o, t) in plan.htaps.iter().enumerate() {
        let w = &plan.hx.weights[t.weights..t.weights + t.n];
        let mut acc = [0f32; 4 * ROWS];
        for (&wk, p) in w.iter().zip(&px[t.start..t.start + t.n]) {
            for l in 0..4 * ROWS {
                acc[l] += wk * p[l];
            }
        }
        // 4 bytes per pixel, the 4th (0) overwritten by the next pixel or in the row's padding:
        // with all lanes used, LLVM keeps the arithmetic 4 lanes wide.
        for (g, d) in dst.chunks_exact_mut(plan.tmp_stride).take(rows).enumerate() {
            let a = &acc[4 * g..4 * g + 4];
            d[3 * o..3 * o + 4].copy_from_slice(&[
                to_u8(a[0]),
                to_u8(a[1]),
                to_u8(a[2]),
                to_u8(a[3]),
            ]);
        }
    }
}

/// Output columns accumulated at once by the portable vertical pass.
const VCHUNK: usize = 32;

/// Vertical pass, portable: output row `j`, `VCHUNK` columns accumulated over the taps at a time.
fn vertical(plan: &Plan, j: usize, tmp: &[u8], dst: &mut [u8]) {
    let taps = &plan.vtaps[plan.vrange[j]..plan.vrange[j + 1]];
    let mut c0 = 0;
    while c0 < dst.len() {
        let len = VCHUNK.min(dst.len() - c0);
        let mut acc = [0f32; VCHUNK];
        for &(wk, off) in taps {
            let row = &tmp[off + c0..off + c0 + len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += wk * p as f32;
            }
        }
        for (d, &a) in dst[c0..c0 + len].iter_mut().zip(&acc) {
            *d = to_u8(a);
        }
        c0 += len;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests;
