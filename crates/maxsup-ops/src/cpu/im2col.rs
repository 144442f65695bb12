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
    /// For a stride-1 same-size convolution and tap (ki, kj): the flat input offset of each output
    /// pixel, the output rows `[r0, r1)` and columns `[lo, hi)` that read inside the image.
    fn same_tap(&self, ki: usize, kj: usize) -> (isize, usize, usize, usize, usize) {
        let dy = (ki * self.dil) as isize - self.pad as isize;
        let dx = (kj * self.dil) as isize - self.pad as isize;
        let (h, w) = (self.h as isize, self.w as isize);
        let r0 = (-dy).clamp(0, h) as usize;
        let r1 = (h - dy).clamp(r0 as isize, h) as usize;
        let lo = (-dx).clamp(0, w) as usize;
        let hi = (w - dx).clamp(lo as isize, w) as usize;
        (dy * w + dx, r0, r1, lo, hi)
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

/// `im2col` for stride-1 same-size convolutions: per tap, one contiguous copy of the shifted
/// plane, then zeros where the tap reads padding (short per-row copies cost more than the data).
fn im2col_same(g: &ConvGeom, img: &[f32], cols: &mut [f32], ld: usize, col0: usize) {
    let (hw, w) = (g.h * g.w, g.w);
    for c in 0..g.c {
        let plane = &img[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let k = (c * g.kh + ki) * g.kw + kj;
                let row = &mut cols[k * ld + col0..k * ld + col0 + hw];
                let (shift, r0, r1, lo, hi) = g.same_tap(ki, kj);
                if r0 == r1 || lo == hi {
                    row.fill(0.0);
                    continue;
                }
                // Output range [a, b) of the valid rows whose shifted source lies in the plane.
                let a = ((r0 * w) as isize).max(-shift) as usize;
                let b = ((r1 * w) as isize).min(hw as isize - shift) as usize;
                let sa = (a as isize + shift) as usize;
                row[a..b].copy_from_slice(&plane[sa..sa + (b - a)]);
                row[..r0 * w].fill(0.0);
                row[r1 * w..].fill(0.0);
                if lo > 0 || hi < w {
                    for r in r0..r1 {
                        row[r * w..r * w + lo].fill(0.0);
                        row[r * w + hi..(r + 1) * w].fill(0.0);
                    }
                }
            }
        }
    }
}

/// `col2im_add` for stride-1 same-size convolutions: zero the entries that read padding, then
/// one contiguous add per tap.
fn col2im_add_same(g: &ConvGeom, cols: &mut [f32], ld: usize, col0: usize, img: &mut [f32]) {
    let (hw, w) = (g.h * g.w, g.w);
    for c in 0..g.c {
        let plane = &mut img[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let k = (c * g.kh + ki) * g.kw + kj;
                let row = &mut cols[k * ld + col0..k * ld + col0 + hw];
                let (shift, r0, r1, lo, hi) = g.same_tap(ki, kj);
                if r0 == r1 || lo == hi {
                    continue;
                }
                if lo > 0 || hi < w {
                    for r in r0..r1 {
                        row[r * w..r * w + lo].fill(0.0);
                        row[r * w + hi..(r + 1) * w].fill(0.0);
                    }
                }
                let a = ((r0 * w) as isize).max(-shift) as usize;
                let b = ((r1 * w) as isize).min(hw as isize - shift) as usize;
                let sa = (a as isize + shift) as usize;
                for (d, s) in plane[sa..sa + (b - a)].iter_mut().zip(&row[a..b]) {
                    *d += s;
                }
            }
        }
    }
}
