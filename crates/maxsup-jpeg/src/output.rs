//! From coefficients to RGB pixels of the requested region: inverse DCT of only the blocks the
//! region touches, chroma upsampling, colour conversion.
//!
//! Chroma is upsampled by linear interpolation between sample centres, which for 2x factors gives
//! libjpeg's "fancy" (triangle) upsampling weights 3/4, 1/4; YCbCr -> RGB uses the JFIF equations.

use crate::frame::{Frame, Tables};
use crate::idct::{to_u8, Idct};
use crate::pool::BufferPool;
use std::mem::MaybeUninit;

/// A rectangle of the (possibly scaled) output image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Region {
    /// The `width x height` rectangle at the origin (a whole image, or a whole resized output).
    pub fn sized(width: usize, height: usize) -> Region {
        Region {
            x: 0,
            y: 0,
            width,
            height,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColorModel {
    Gray,
    YCbCr,
    Rgb,
}

/// Which two component samples (and with what weight on the second) feed each output position
/// along one axis.
pub(crate) struct AxisPlan {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w: Vec<f32>,
    /// Component samples `lo..hi` are read.
    pub lo: usize,
    pub hi: usize,
    /// The component has the output's resolution on this axis (no interpolation).
    pub direct: bool,
    /// The component has half the output's resolution (4:2:0 / 4:2:2 chroma): a vectorizable path.
    pub half: bool,
    /// First output position.
    pub start: usize,
}

/// Plans output positions `start..start + len` for a component with `factor / max` times the
/// output's resolution and `samples` samples on this axis.
pub(crate) fn axis_plan(
    start: usize,
    len: usize,
    factor: usize,
    max: usize,
    samples: usize,
) -> AxisPlan {
    let direct = factor == max;
    let (mut i0, mut i1, mut w) = (
        Vec::with_capacity(len),
        Vec::with_capacity(len),
        Vec::with_capacity(len),
    );
    let last = samples - 1;
    for x in start..start + len {
        if direct {
            let i = x.min(last);
            i0.push(i);
            i1.push(i);
            w.push(0.0);
        } else {
            let c = (x as f32 + 0.5) * factor as f32 / max as f32 - 0.5;
            // floor(c) for c >= -0.5, without `f32::floor` (a libm call without SSE4.1).
            let base = if c < 0.0 { -1 } else { c as isize };
            let f = base as f32;
            i0.push(base.clamp(0, last as isize) as usize);
            i1.push((base + 1).clamp(0, last as isize) as usize);
            w.push(if base < 0 || base as usize >= last {
                0.0
            } else {
                c - f
            });
        }
    }
    let lo = *i0.iter().min().unwrap_or(&0);
    let hi = i1.iter().max().map_or(0, |&m| m + 1);
    AxisPlan {
        i0,
        i1,
        w,
        lo,
        hi,
        direct,
        half: 2 * factor == max,
        start,
    }
}

/// The samples of one component that the region needs, inverse-transformed.
pub(crate) struct Plane {
    /// Sample coordinates of `data[0]`.
    x0: usize,
    y0: usize,
    width: usize,
    data: Vec<u8>,
    cols: AxisPlan,
    rows: AxisPlan,
}

/// How one axis of a component reaches the output grid at scale `1/denom`: each block yields `n`
/// samples, and sample `i` sits at output coordinate `(i + 0.5) * den / num - 0.5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AxisScale {
    pub n: usize,
    pub num: usize,
    pub den: usize,
}

/// Picks the inverse DCT size so that a subsampled component lands on the output grid directly
/// when it can (like libjpeg: 4:2:0 chroma at 1/2 scale is an 8-point transform, not a 4-point one
/// upsampled 2x). A block covers `8 * max / (factor * denom)` output pixels: if that is a power of
/// two up to 8 it is the transform size; if larger, an 8-point transform is upsampled by the rest.
pub(crate) fn axis_scale(factor: usize, max: usize, denom: usize) -> AxisScale {
    let (num, den) = (8 * max, factor * denom);
    if num % den == 0 && (num / den).is_power_of_two() {
        let n = num / den;
        return if n <= 8 {
            AxisScale { n, num: 1, den: 1 }
        } else {
            AxisScale {
                n: 8,
                num: 8,
                den: n,
            }
        };
    }
    AxisScale {
        n: 8 / denom,
        num: factor,
        den: max,
    }
}

/// Per axis: the scale and the number of samples the component has on the output grid.
fn component_axes(
    frame: &Frame,
    c: usize,
    denom: usize,
) -> ((AxisScale, usize), (AxisScale, usize)) {
    let comp = &frame.components[c];
    let (w, h) = comp.sample_size(frame);
    let sx = axis_scale(comp.h, frame.h_max, denom);
    let sy = axis_scale(comp.v, frame.v_max, denom);
    ((sx, (w * sx.n).div_ceil(8)), (sy, (h * sy.n).div_ceil(8)))
}

/// The blocks of a component that the region reads: columns `x0..x1`, rows `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockRange {
    pub x0: usize,
    pub x1: usize,
    pub y0: usize,
    pub y1: usize,
}

impl BlockRange {
    #[inline(always)]
    pub fn contains(&self, bx: usize, by: usize) -> bool {
        (self.x0..self.x1).contains(&bx) && (self.y0..self.y1).contains(&by)
    }
}

/// How one component reaches the region: the blocks under it (entropy decoding stops below them,
/// and refinement scans update coefficient values only inside them), the transform size, and
/// the column and row sampling plans. Computed once per image, before the scans.
pub(crate) struct ComponentPlan {
    pub blocks: BlockRange,
    nx: usize,
    ny: usize,
    cols: AxisPlan,
    rows: AxisPlan,
}

/// The plan of every component of the frame for `region` at scale `1/denom`.
pub(crate) fn plan_components(frame: &Frame, denom: usize, region: Region) -> Vec<ComponentPlan> {
    let mut plans = Vec::with_capacity(frame.components.len());
    for c in 0..frame.components.len() {
        let ((sx, sw), (sy, sh)) = component_axes(frame, c, denom);
        let cols = axis_plan(region.x, region.width, sx.num, sx.den, sw);
        let rows = axis_plan(region.y, region.height, sy.num, sy.den, sh);
        plans.push(ComponentPlan {
            blocks: BlockRange {
                x0: cols.lo / sx.n,
                x1: cols.hi.div_ceil(sx.n),
                y0: rows.lo / sy.n,
                y1: rows.hi.div_ceil(sy.n),
            },
            nx: sx.n,
            ny: sy.n,
            cols,
            rows,
        });
    }
    plans
}

#[inline(always)]
pub(crate) fn transform_plane(
    frame: &Frame,
    tables: &Tables,
    c: usize,
    plan: ComponentPlan,
    avx2: bool,
) -> Plane {
    let comp = &frame.components[c];
    let ComponentPlan {
        blocks,
        nx,
        ny,
        cols,
        rows,
    } = plan;
    let (bx0, bx1) = (blocks.x0, blocks.x1.min(comp.blocks_w));
    let (by0, by1) = (blocks.y0, blocks.y1.min(comp.blocks_h));
    let width = (bx1 - bx0) * nx;
    // Every byte is written below (the blocks tile the plane), so a reused buffer is not cleared.
    let len = width * (by1 - by0) * ny;
    let mut data: Vec<u8> = PLANE_BUFFERS.with(|p| p.take(len));
    let quant = tables.quant[comp.quant_index].unwrap_or([1; 64]);
    let idct = Idct::new(nx, ny, &quant);
    for by in by0..by1 {
        for bx in bx0..bx1 {
            let b = by * comp.blocks_w + bx;
            let o = (by - by0) * ny * width + (bx - bx0) * nx;
            let coefs = &comp.coefs[b * 64..b * 64 + 64];
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `avx2` is only set when the CPU has AVX2 and FMA; the slices are in bounds
                // (64 coefficients; `ny` rows of `width` >= `nx` bytes from `o`).
                unsafe { idct.block_avx2(coefs, comp.nz[b], &mut data[o..], width) };
                continue;
            }
            idct.block(coefs, comp.nz[b], &mut data[o..], width);
        }
    }
    Plane {
        x0: bx0 * nx,
        y0: by0 * ny,
        width,
        data,
        cols,
        rows,
    }
}

thread_local! {
    /// Sample buffers of earlier planes on this thread, reused (see `Frame::allocate`).
    static PLANE_BUFFERS: BufferPool<u8> = const { BufferPool::new() };
}

impl Drop for Plane {
    fn drop(&mut self) {
        PLANE_BUFFERS.with(|p| p.give(std::mem::take(&mut self.data)));
    }
}

impl Plane {
    /// Fills `out[x]` (one per region column) with this component's values on output row `j`
    /// (0-based within the region). `tmp` is scratch space.
    #[inline(always)]
    fn row(&self, j: usize, out: &mut [f32], tmp: &mut [Vec<f32>; 3]) {
        let [tmp, ext, full] = tmp;
        let (r0, r1, wy) = (
            self.rows.i0[j] - self.y0,
            self.rows.i1[j] - self.y0,
            self.rows.w[j],
        );
        let row0 = &self.data[r0 * self.width..(r0 + 1) * self.width];
        let row1 = &self.data[r1 * self.width..(r1 + 1) * self.width];
        let (lo, hi) = (self.cols.lo - self.x0, self.cols.hi - self.x0);
        if self.cols.direct {
            lerp_rows(&row0[lo..hi], &row1[lo..hi], wy, out);
            return;
        }
        tmp.clear();
        tmp.resize(hi - lo, 0.0);
        lerp_rows(&row0[lo..hi], &row1[lo..hi], wy, tmp);
        if self.cols.half {
            upsample_half(tmp, self.cols.lo, self.cols.start, out, ext, full);
            return;
        }
        let base = self.cols.lo;
        for (x, o) in out.iter_mut().enumerate() {
            let a = tmp[self.cols.i0[x] - base];
            let b = tmp[self.cols.i1[x] - base];
            *o = a + self.cols.w[x] * (b - a);
        }
    }
}

/// Doubles the resolution of samples `lo..lo + c.len()` with weights 3/4, 1/4 toward
/// the nearer neighbour (edges replicated), writing output positions `start..start + out.len()`.
/// Same values as the general interpolation path, computed two outputs per sample.
#[inline(always)]
fn upsample_half(
    c: &[f32],
    lo: usize,
    start: usize,
    out: &mut [f32],
    ext: &mut Vec<f32>,
    full: &mut Vec<f32>,
) {
    let first = start / 2; // sample of the first output
    debug_assert!(first >= lo && (start + out.len() - 1) / 2 < lo + c.len());
    let count = (start + out.len() - 1) / 2 - first + 1;
    // ext[k] = sample first - 1 + k, clamped to the samples in `c`. `c` holds every sample an output
    // in the window reads (the plan clamped those to the image); clamping to `c` only changes samples
    // that feed outputs outside the window, which are dropped.
    let (s0, s1) = (first as isize - 1, (first + count) as isize); // inclusive
    let (lo_i, hi_i) = (lo as isize, (lo + c.len()) as isize - 1);
    let left = (lo_i - s0).clamp(0, count as isize + 2) as usize;
    let right = (s1 - hi_i).clamp(0, count as isize + 2) as usize;
    let (m0, m1) = (s0.clamp(lo_i, hi_i) - lo_i, s1.clamp(lo_i, hi_i) - lo_i);
    ext.clear();
    ext.extend(std::iter::repeat_n(c[0], left));
    ext.extend_from_slice(&c[m0 as usize..=m1 as usize]);
    debug_assert_eq!(ext.len(), count + 2 - right);
    ext.extend(std::iter::repeat_n(c[c.len() - 1], right));
    full.clear();
    full.resize(2 * count, 0.0);
    for (pair, w) in full.chunks_exact_mut(2).zip(ext.windows(3)) {
        let m = 0.75 * w[1];
        pair[0] = m + 0.25 * w[0];
        pair[1] = m + 0.25 * w[2];
    }
    let skip = start - 2 * first;
    out.copy_from_slice(&full[skip..skip + out.len()]);
}

/// `out = a + w (b - a)` element-wise, from bytes.
#[inline(always)]
fn lerp_rows(a: &[u8], b: &[u8], w: f32, out: &mut [f32]) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    if w == 0.0 {
        for x in 0..n {
            out[x] = a[x] as f32;
        }
    } else {
        for x in 0..n {
            let (p, q) = (a[x] as f32, b[x] as f32);
            out[x] = p + w * (q - p);
        }
    }
}

/// Writes three byte rows interleaved.
#[inline(always)]
fn interleave(r: &[u8], g: &[u8], b: &[u8], dst: &mut [MaybeUninit<u8>]) {
    for (((px, &r), &g), &b) in dst.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
        px[0].write(r);
        px[1].write(g);
        px[2].write(b);
    }
}

/// Renders the region as interleaved RGB.
#[inline(always)]
pub(crate) fn render(
    frame: &Frame,
    tables: &Tables,
    model: ColorModel,
    plans: Vec<ComponentPlan>,
    region: Region,
    avx2: bool,
) -> Vec<u8> {
    // Plain loops rather than iterator closures here and below: closures are separate functions that
    // would not inherit the caller's AVX2 code generation.
    let mut planes = Vec::with_capacity(plans.len());
    for (c, plan) in plans.into_iter().enumerate() {
        planes.push(transform_plane(frame, tables, c, plan, avx2));
    }
    let w = region.width;
    // Filled row by row below; not zeroed first (that was ~2% of a crop decode).
    let len = w * region.height * 3;
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let mut rows = vec![vec![0f32; w]; planes.len()];
    let mut rgb = vec![vec![0u8; w]; 3];
    let mut tmp = [Vec::new(), Vec::new(), Vec::new()];
    for j in 0..region.height {
        for c in 0..planes.len() {
            planes[c].row(j, &mut rows[c], &mut tmp);
        }
        let dst = &mut spare[j * w * 3..(j + 1) * w * 3];
        let [r8, g8, b8] = &mut rgb[..] else {
            unreachable!()
        };
        match model {
            ColorModel::Gray => {
                for x in 0..w {
                    r8[x] = to_u8(rows[0][x]);
                }
                interleave(r8, r8, r8, dst);
            }
            ColorModel::Rgb => {
                for x in 0..w {
                    r8[x] = to_u8(rows[0][x]);
                    g8[x] = to_u8(rows[1][x]);
                    b8[x] = to_u8(rows[2][x]);
                }
                interleave(r8, g8, b8, dst);
            }
            ColorModel::YCbCr => {
                let (y, cb, cr) = (&rows[0][..w], &rows[1][..w], &rows[2][..w]);
                let (r8, g8, b8) = (&mut r8[..w], &mut g8[..w], &mut b8[..w]);
                for x in 0..w {
                    let (l, b, r) = (y[x], cb[x] - 128.0, cr[x] - 128.0);
                    r8[x] = to_u8(l + 1.402 * r);
                    g8[x] = to_u8(l - 0.344_136 * b - 0.714_136 * r);
                    b8[x] = to_u8(l + 1.772 * b);
                }
                interleave(r8, g8, b8, dst);
            }
        }
    }
    // SAFETY: each of the `region.height` rows wrote all of its `3 * w` bytes (every arm above
    // interleaves three `w`-byte rows into it), so the first `len` bytes are initialized.
    unsafe { out.set_len(len) };
    out
}
