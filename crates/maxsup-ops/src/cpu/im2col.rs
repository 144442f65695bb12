//! Convolution geometry and the im2col / col2im transforms between an NCHW image and its
//! column matrix `cols[k][j]`, `k = (c * KH + ki) * KW + kj`, `j = b * P + oh * OW + ow` for the
//! `b`-th image of a block (so a block of images is one wide GEMM operand).

/// Shape and hyper-parameters of one 2-D convolution (groups = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// The input's (N, C, H, W).
    pub fn input(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.h, self.w)
    }

    /// The output's (N, O, OH, OW).
    pub fn output(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, self.oh, self.ow)
    }

    /// The weight's (O, C, KH, KW) (groups = 1).
    pub fn weight(&self) -> (usize, usize, usize, usize) {
        (self.o, self.c, self.kh, self.kw)
    }

    /// Validates the hyper-parameters and computes the output size.
    pub fn new(
        x: (usize, usize, usize, usize),
        wt: (usize, usize, usize, usize),
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> candle_core::Result<Self> {
        let (n, c, h, w) = x;
        let (o, wc, kh, kw) = wt;
        if wc != c {
            candle_core::bail!(
                "conv2d: input has {c} channels but weight expects {wc} (groups = 1)"
            );
        }
        if stride == 0 || dil == 0 {
            candle_core::bail!("conv2d: stride ({stride}) and dilation ({dil}) must be >= 1");
        }
        let ekh = dil * (kh - 1) + 1;
        let ekw = dil * (kw - 1) + 1;
        if h + 2 * pad < ekh || w + 2 * pad < ekw {
            candle_core::bail!("conv2d: kernel {kh}x{kw} (dilation {dil}) larger than padded input {h}x{w} + 2*{pad}");
        }
        let oh = (h + 2 * pad - ekh) / stride + 1;
        let ow = (w + 2 * pad - ekw) / stride + 1;
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            dil,
            oh,
            ow,
        })
    }
    /// Rows of the column matrix: C * KH * KW.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output pixels per image: OH * OW.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Input elements per image.
    pub fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Stride 1 with the output as large as the input (e.g. 3x3, padding 1): output pixel `j`
    /// of kernel tap (ki, kj) reads input pixel `j + shift`, one shift for the whole plane.
    pub fn is_same_stride1(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w
    }
    /// For a stride-1 same-size convolution, tap (ki, kj) as a contiguous copy (see [`SameTap`]);
    /// `None` when the tap reads only padding.
    fn same_tap(&self, ki: usize, kj: usize) -> Option<SameTap> {
        let dy = (ki * self.dil) as isize - self.pad as isize;
        let dx = (kj * self.dil) as isize - self.pad as isize;
        let (h, w) = (self.h as isize, self.w as isize);
        let r0 = (-dy).clamp(0, h) as usize;
        let r1 = (h - dy).clamp(r0 as isize, h) as usize;
        let lo = (-dx).clamp(0, w) as usize;
        let hi = (w - dx).clamp(lo as isize, w) as usize;
        if r0 == r1 || lo == hi {
            return None;
        }
        let (w, shift) = (self.w, dy * w + dx);
        // Output range of the valid rows whose shifted source lies inside the plane.
        let a = ((r0 * w) as isize).max(-shift) as usize;
        let b = ((r1 * w) as isize).min((self.h * w) as isize - shift) as usize;
        Some(SameTap {
            rows: r0..r1,
            cols: lo..hi,
            out: a..b,
            src: (a as isize + shift) as usize,
            w,
        })
    }
    /// A 1x1, stride-1, unpadded convolution is a plain GEMM on the image itself.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// The output columns `[lo, hi)` whose input column `ow * stride - pad + kj * dil` is inside
    /// the image (the rest read padding).
    fn valid_ow(&self, kj: usize) -> (usize, usize) {
        let off = (kj * self.dil) as isize - self.pad as isize;
        let s = self.stride as isize;
        // smallest ow with ow*s + off >= 0
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        // largest ow with ow*s + off <= w-1  -> hi = that + 1
        let last = self.w as isize - 1 - off;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        let lo = (lo as usize).min(self.ow);
        let hi = (hi as usize).min(self.ow).max(lo);
        (lo, hi)
    }
}

/// One kernel tap of a stride-1 same-size convolution: output pixel `j` reads input pixel
/// `j + shift`, so the tap is the contiguous copy `out` <- `src .. src + out.len()`, except that
/// output columns outside `cols` (and rows outside `rows`) read padding.
struct SameTap {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    out: std::ops::Range<usize>,
    src: usize,
    w: usize,
}

impl SameTap {
    /// Zeroes the entries of a column-matrix row (one image plane) that read padding columns
    /// inside the valid rows.
    #[inline]
    fn zero_padding_columns(&self, row: &mut [f32]) {
        let w = self.w;
        if self.cols.start > 0 || self.cols.end < w {
            for r in self.rows.clone() {
                zero_short(&mut row[r * w..r * w + self.cols.start]);
                zero_short(&mut row[r * w + self.cols.end..(r + 1) * w]);
            }
        }
    }
}

simd_kernel! {
    /// Fills `cols` (K rows, row stride `ld`, columns `col0 .. col0 + P`) from one image `img` (C*H*W).
    pub fn im2col(g: &ConvGeom, img: &[f32], cols: &mut [f32], ld: usize, col0: usize) {
        if g.is_same_stride1() {
            return im2col_same(g, img, cols, ld, col0);
        }
        let (oh_n, ow_n) = (g.oh, g.ow);
        for c in 0..g.c {
            let plane = &img[c * g.h * g.w..(c + 1) * g.h * g.w];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let k = (c * g.kh + ki) * g.kw + kj;
                    let row = &mut cols[k * ld + col0..k * ld + col0 + oh_n * ow_n];
                    let (lo, hi) = g.valid_ow(kj);
                    let iw0 = (lo * g.stride + kj * g.dil) as isize - g.pad as isize;
                    for oh in 0..oh_n {
                        let dst = &mut row[oh * ow_n..(oh + 1) * ow_n];
                        let ih = (oh * g.stride + ki * g.dil) as isize - g.pad as isize;
                        if ih < 0 || ih >= g.h as isize || lo >= hi {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let iw0 = iw0 as usize;
                        if g.stride == 1 {
                            dst[lo..hi].copy_from_slice(&src[iw0..iw0 + (hi - lo)]);
                        } else {
                            for (i, d) in dst[lo..hi].iter_mut().enumerate() {
                                *d = src[iw0 + i * g.stride];
                            }
                        }
                    }
                }
            }
        }
    }
}

simd_kernel! {
    /// Adds the column matrix back into one image gradient `img` (C*H*W): the adjoint of `im2col`.
    ///
    /// For stride-1 "same" convolutions the entries of `cols` that read padding are overwritten with
    /// zeros (they carry no gradient), which lets each kernel tap be one contiguous add.
    pub fn col2im_add(g: &ConvGeom, cols: &mut [f32], ld: usize, col0: usize, img: &mut [f32]) {
        if g.is_same_stride1() {
            return col2im_add_same(g, cols, ld, col0, img);
        }
        let (oh_n, ow_n) = (g.oh, g.ow);
        for c in 0..g.c {
            let plane = &mut img[c * g.h * g.w..(c + 1) * g.h * g.w];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let k = (c * g.kh + ki) * g.kw + kj;
                    let row = &cols[k * ld + col0..k * ld + col0 + oh_n * ow_n];
                    let (lo, hi) = g.valid_ow(kj);
                    if lo >= hi {
                        continue;
                    }
                    let iw0 = ((lo * g.stride + kj * g.dil) as isize - g.pad as isize) as usize;
                    for oh in 0..oh_n {
                        let ih = (oh * g.stride + ki * g.dil) as isize - g.pad as isize;
                        if ih < 0 || ih >= g.h as isize {
                            continue;
                        }
                        let src = &row[oh * ow_n + lo..oh * ow_n + hi];
                        let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                        if g.stride == 1 {
                            for (d, s) in dst[iw0..iw0 + (hi - lo)].iter_mut().zip(src) {
                                *d += s;
                            }
                        } else {
                            for (i, s) in src.iter().enumerate() {
                                dst[iw0 + i * g.stride] += s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Zeroes a slice that is usually one or two elements long (the padding columns of a row):
/// `fill` becomes a `memset` call, whose call and dispatch cost more than the store, ~5% of a
/// ResNet-20 step when done per row, tap and channel.
#[inline(always)]
fn zero_short(s: &mut [f32]) {
    match s {
        [] => {}
        [a] => *a = 0.0,
        [a, b] => {
            *a = 0.0;
            *b = 0.0;
        }
        _ => s.fill(0.0),
    }
}

/// `im2col` for stride-1 same-size convolutions: per tap, one contiguous copy of the shifted
/// plane, then zeros where the tap reads padding (short per-row copies cost more than the data).
#[inline]
fn im2col_same(g: &ConvGeom, img: &[f32], cols: &mut [f32], ld: usize, col0: usize) {
    let hw = g.h * g.w;
    let taps = same_taps(g);
    for c in 0..g.c {
        let plane = &img[c * hw..(c + 1) * hw];
        for (t, tap) in taps.iter().enumerate() {
            let k = c * taps.len() + t;
            let row = &mut cols[k * ld + col0..k * ld + col0 + hw];
            let Some(tap) = tap else {
                row.fill(0.0);
                continue;
            };
            row[tap.out.clone()].copy_from_slice(&plane[tap.src..tap.src + tap.out.len()]);
            row[..tap.rows.start * g.w].fill(0.0);
            row[tap.rows.end * g.w..].fill(0.0);
            tap.zero_padding_columns(row);
        }
    }
}

/// `col2im_add` for stride-1 same-size convolutions: zero the entries that read padding, then
/// one contiguous add per tap.
#[inline]
fn col2im_add_same(g: &ConvGeom, cols: &mut [f32], ld: usize, col0: usize, img: &mut [f32]) {
    let hw = g.h * g.w;
    let taps = same_taps(g);
    for c in 0..g.c {
        let plane = &mut img[c * hw..(c + 1) * hw];
        for (t, tap) in taps.iter().enumerate() {
            let Some(tap) = tap else { continue };
            let k = c * taps.len() + t;
            let row = &mut cols[k * ld + col0..k * ld + col0 + hw];
            tap.zero_padding_columns(row);
            let dst = &mut plane[tap.src..tap.src + tap.out.len()];
            for (d, s) in dst.iter_mut().zip(&row[tap.out.clone()]) {
                *d += s;
            }
        }
    }
}

/// The taps of a stride-1 same-size convolution in column-matrix row order (`ki * KW + kj`),
/// computed once per image rather than once per channel.
fn same_taps(g: &ConvGeom) -> Vec<Option<SameTap>> {
    (0..g.kh)
        .flat_map(|ki| (0..g.kw).map(move |kj| (ki, kj)))
        .map(|(ki, kj)| g.same_tap(ki, kj))
        .collect()
}
