//! Direct 3x3 stride-1 "same" convolution for the narrow layers, accumulated in AVX-512 or AVX2
//! registers: the forward pass and, as the same convolution of dY with the flipped transposed
//! weight, the input gradient.
//!
//! Below 64 channels (ResNet-20's 16- and 32-channel layers) Winograd's transforms cost more than
//! they save (`winograd::applies`), and the im2col GEMM copies the input 9 times, then the `gemm`
//! crate packs those copies again, for only O = 16..32 multiply-adds per copied element. Here an
//! output row of a block of output channels stays in 16 registers while the kernel walks the
//! input channels and taps of a zero-padded copy of the image: per (channel, tap), one or two
//! 16-wide loads of the input row and one broadcast weight per output channel feed 16 fused
//! multiply-adds. With AVX2 (16 registers of 8 lanes) a block is 12 accumulators: one 8-wide
//! vector by 12 output channels, or two by 6. `MAXSUP_DIRECT3X3=0` turns the path off (A/B runs).

use super::im2col::ConvGeom;
use super::slices::{num_threads, split_range};
use super::uninit::Output;
use super::winograd;
use rayon::prelude::*;

/// The instruction set a kernel runs on: AVX-512F (16 lanes, 32 registers) or AVX2 with FMA
/// (8 lanes, 16 registers).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// Every instruction set this CPU runs, best first.
    fn available() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Isa::Avx2);
            }
        }
        out
    }

    /// f32 lanes per register.
    fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }
}

/// The instruction set the kernels use here, `None` when the CPU has neither or
/// `MAXSUP_DIRECT3X3=0`.
fn chosen_isa() -> Option<Isa> {
    static CHOSEN: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        if std::env::var("MAXSUP_DIRECT3X3").as_deref() == Ok("0") {
            return None;
        }
        Isa::available().first().copied()
    })
}

/// Rows narrower than this leave most of a vector's lanes idle (a 512-channel 4x4 layer ran
/// 1.3x slower here than on im2col).
const MIN_WIDTH: usize = 8;

/// Channels from which the im2col GEMM (or Winograd) is the better kernel.
const NARROW: usize = 64;

/// Whether the direct kernel takes this convolution: 3x3, stride 1, padding 1, dilation 1, fewer
/// than 64 input or output channels (so not Winograd's), rows of at least 8 columns, on a CPU
/// with AVX-512F or AVX2 and FMA.
pub fn applies(g: &ConvGeom) -> bool {
    // A "same" 3x3 keeps the image size; Winograd takes only 64+ channels on both sides.
    chosen_isa().is_some() && winograd::shape_fits(g) && g.c.min(g.o) < NARROW && g.w >= MIN_WIDTH
}

/// Whether [`weight_grad`] runs too where [`applies`]: AVX-512 only. With AVX2's 16 registers a
/// direct weight-gradient kernel holds at most one output channel's 9 tap sums (or 4 channels' 3)
/// and lost to the im2col GEMM in both forms (`bench/conv_kernels.sh`, ResNet-20's 16- and
/// 32-channel layers: backward 1.1-1.4x slower).
pub fn weight_grad_applies(g: &ConvGeom) -> bool {
    applies(g) && chosen_isa() == Some(Isa::Avx512)
}

/// `y[N, O, H, W] = conv(x[N, C, H, W], w[O, C, 3, 3])` (see [`applies`]).
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    forward_on(isa_for_applies(), g, x, w)
}

fn isa_for_applies() -> Isa {
    chosen_isa().expect("direct3x3 called where `applies` is false")
}

fn forward_on(isa: Isa, g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let shape = Shape::of(isa, g.n, g.c, g.o, g.h, g.w);
    let wp = pack_weight(&shape, |o, c, t| w[(o * g.c + c) * 9 + t]);
    run(&shape, x, &wp)
}

/// `dx[N, C, H, W]` of [`forward`] given `dy[N, O, H, W]`: the same convolution of dy with
/// `w'[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw]`.
pub fn input_grad(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    input_grad_on(isa_for_applies(), g, w, dy)
}

fn input_grad_on(isa: Isa, g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let shape = Shape::of(isa, g.n, g.o, g.c, g.h, g.w);
    let wp = pack_weight(&shape, |c, o, t| w[(o * g.c + c) * 9 + (8 - t)]);
    run(&shape, dy, &wp)
}

/// `dW[O, C, 3, 3]` of [`forward`] given `dy[N, O, H, W]`: per image, per group of up to three
/// output channels and per input channel, the (channel, tap) sums over the image's pixels
/// accumulate in up to 27 registers, then into the thread's 16-lane partials `[O][C][9][16]`;
/// each thread's lanes are summed once at the end, and the threads' gradients added in order.
pub fn weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    weight_grad_on(isa_for_applies(), g, x, dy)
}

fn weight_grad_on(isa: Isa, g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let s = Shape::of(isa, g.n, g.c, g.o, g.h, g.w);
    let lanes_per = isa.lanes();
    let (chw, ohw) = (g.c * g.h * g.w, g.o * g.h * g.w);
    assert!(
        x.len() >= g.n * chw && dy.len() >= g.n * ohw,
        "direct3x3: buffers too small"
    );
    let parts: Vec<Vec<f32>> = split_range(g.n, num_threads())
        .into_par_iter()
        .map(|r| {
            // A register's lanes per (o, c, tap), summed across lanes once at the end: reducing
            // the registers per image cost about half as much again as the multiply-adds.
            let mut lanes = vec![0f32; g.o * g.c * 9 * lanes_per];
            PADDED.with(|p| {
                let mut p = p.borrow_mut();
                for b in r {
                    pad_image(&s, &x[b * chw..(b + 1) * chw], &mut p);
                    let dyi = &dy[b * ohw..(b + 1) * ohw];
                    // SAFETY: `isa` came from `Isa::available` (run-time detection).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        match isa {
                            Isa::Avx512 => avx512::weight_grad_image(&s, &p, dyi, &mut lanes),
                            Isa::Avx2 => unreachable!("see `weight_grad_applies`"),
                        }
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("direct3x3 runs only where AVX-512F or AVX2 was detected");
                }
            });
            lanes
                .chunks_exact(lanes_per)
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
    isa: Isa,
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    /// Vectors per row segment (1 or 2) and output channels per register block (AVX-512:
    /// 16 / nv, AVX2: 12 / nv).
    nv: usize,
    ob: usize,
    /// Columns of a padded input row: the row, the two padding columns and slack for the last
    /// segment's full-width loads.
    rw: usize,
}

impl Shape {
    fn of(isa: Isa, n: usize, ci: usize, co: usize, h: usize, w: usize) -> Self {
        let lanes = isa.lanes();
        let nv = if w <= lanes { 1 } else { 2 };
        let accumulators = match isa {
            Isa::Avx512 => 16,
            Isa::Avx2 => 12,
        };
        let ob = accumulators / nv;
        let rw = w.div_ceil(lanes * nv) * lanes * nv + lanes;
        Self {
            isa,
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
                // SAFETY: `s.isa` came from `Isa::available` (run-time detection).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    match s.isa {
                        Isa::Avx512 => avx512::image(s, &p, wp, yi),
                        Isa::Avx2 => avx2::image(s, &p, wp, yi),
                    }
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("direct3x3 runs only where AVX-512F or AVX2 was detected");
            })
        });
    // SAFETY: `image` writes every (channel, row, column) of every image's output.
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

/// The output kernel's body, written once over the register operations of an instruction set
/// ([`Register`]) and compiled into each set's `image` (everything here is `inline(always)`, so
/// the intrinsics inline into a function that enables their target features).
#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::Shape;
    use std::mem::MaybeUninit;

    /// One vector register of f32 lanes.
    pub trait Register: Copy {
        const LANES: usize;
        /// # Safety
        /// As for every method: the CPU supports the register's instruction set, and the caller
        /// enables it.
        unsafe fn zero() -> Self;
        /// # Safety
        /// `p` is valid for reading `LANES` floats.
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn splat(v: f32) -> Self;
        /// `a * b + c`, fused.
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
        /// Writes the first `len <= LANES` lanes to `p`, and nothing past them.
        ///
        /// # Safety
        /// `p` is valid for writing `len` floats.
        unsafe fn store_first(self, p: *mut f32, len: usize);
    }

    /// Every output row segment of every block of one image: row segments of one register
    /// (`OB1` output channels per block) or two (`OB2`), as `s.nv` says.
    #[inline(always)]
    pub unsafe fn image<V: Register, const OB1: usize, const OB2: usize>(
        s: &Shape,
        xp: &[f32],
        wp: &[f32],
        yi: &mut [MaybeUninit<f32>],
    ) {
        let seg = V::LANES * s.nv;
        for blk in 0..s.blocks() {
            let wb = &wp[blk * s.ci * 9 * s.ob..(blk + 1) * s.ci * 9 * s.ob];
            for r in 0..s.h {
                for w0 in (0..s.w).step_by(seg) {
                    match s.nv {
                        1 => segment::<V, OB1, 1>(s, xp, wb, blk, r, w0, yi),
                        _ => segment::<V, OB2, 2>(s, xp, wb, blk, r, w0, yi),
                    }
                }
            }
        }
    }

    /// Output row `r`, columns `w0 .. w0 + LANES * NV`, channels `blk * OB ..` of one image:
    /// `OB x NV` accumulators, fed per (input channel, tap) by `NV` loads of the padded input
    /// row and `OB` broadcast weights.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn segment<V: Register, const OB: usize, const NV: usize>(
        s: &Shape,
        xp: &[f32],
        wb: &[f32],
        blk: usize,
        r: usize,
        w0: usize,
        yi: &mut [MaybeUninit<f32>],
    ) {
        let rows = s.h + 2;
        let mut acc = [[V::zero(); NV]; OB];
        for c in 0..s.ci {
            for kh in 0..3 {
                let row = &xp[(c * rows + r + kh) * s.rw..(c * rows + r + kh + 1) * s.rw];
                for kw in 0..3 {
                    let mut xv = [V::zero(); NV];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        let at = w0 + v * V::LANES + kw;
                        // In bounds: `rw` leaves a full vector of slack past the last segment.
                        *xv = V::load(row[at..at + V::LANES].as_ptr());
                    }
                    let wt = &wb[(c * 9 + kh * 3 + kw) * OB..(c * 9 + kh * 3 + kw + 1) * OB];
                    for (a, &wj) in acc.iter_mut().zip(wt) {
                        let wv = V::splat(wj);
                        for (a, &x) in a.iter_mut().zip(&xv) {
                            *a = V::mul_add(wv, x, *a);
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
                let col = w0 + v * V::LANES;
                if col >= s.w {
                    break;
                }
                let len = (s.w - col).min(V::LANES);
                a.store_first(out[col..col + len].as_mut_ptr().cast::<f32>(), len);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Shape;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    const LANES: usize = 16;

    /// Every output row segment of every block of one image (16 or 8 output channels per block).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn image(s: &Shape, xp: &[f32], wp: &[f32], yi: &mut [MaybeUninit<f32>]) {
        super::kernel::image::<__m512, 16, 8>(s, xp, wp, yi)
    }

    impl super::kernel::Register for __m512 {
        const LANES: usize = LANES;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store_first(self, p: *mut f32, len: usize) {
            let mask: __mmask16 = if len >= LANES {
                0xffff
            } else {
                (1u16 << len) - 1
            };
            _mm512_mask_storeu_ps(p, mask, self)
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
        let (rows, hw, lanes) = (s.h + 2, s.h * s.w, LANES);
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
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Shape;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Every output row segment of every block of one image (12 or 6 output channels per block:
    /// 12 accumulators leave 4 of the 16 registers for loads and broadcasts).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn image(s: &Shape, xp: &[f32], wp: &[f32], yi: &mut [MaybeUninit<f32>]) {
        super::kernel::image::<__m256, 12, 6>(s, xp, wp, yi)
    }

    impl super::kernel::Register for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store_first(self, p: *mut f32, len: usize) {
            // All bits set in the lanes `i < len`: the masked store writes only those.
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(len as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            _mm256_maskstore_ps(p, mask, self)
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

    /// Where the CPU has neither instruction set the path is off (the im2col GEMM runs).
    #[test]
    fn applies_only_with_a_kernel_to_run() {
        let g = geom(2, 16, 16, 8, 8);
        assert_eq!(
            applies(&g),
            chosen_isa().is_some(),
            "direct3x3 must take a narrow 3x3 exactly when a kernel can run"
        );
    }

    /// The kernels against direct f64 sums, on rows of one masked vector, of two vectors and of
    /// two segments, with partial output-channel blocks, for every instruction set the CPU has
    /// (AVX-512 boxes test both sets).
    #[test]
    fn kernels_match_naive_sums_on_every_available_isa() {
        for isa in Isa::available() {
            kernels_match_naive_sums(isa);
        }
    }

    fn kernels_match_naive_sums(isa: Isa) {
        for (i, &(n, c, o, h, w)) in [
            (2, 3, 5, 6, 9),
            (1, 4, 17, 3, 20),
            (2, 2, 3, 4, 40),
            (1, 2, 13, 3, 8),
            (1, 3, 7, 2, 16),
        ]
        .iter()
        .enumerate()
        {
            let g = geom(n, c, o, h, w);
            let (x, wt, dy) = (
                values(n * c * h * w, i),
                values(o * c * 9, i + 10),
                values(n * o * h * w, i + 20),
            );
            // The weight gradient has a direct kernel for AVX-512 only; elsewhere it is the
            // im2col GEMM's, checked by the conv2d tests.
            let (y, dx) = (
                forward_on(isa, &g, &x, &wt),
                input_grad_on(isa, &g, &wt, &dy),
            );
            let dw = (isa == Isa::Avx512).then(|| weight_grad_on(isa, &g, &x, &dy));
            let close = |got: f32, want: f64, what: &str| {
                assert!(
                    (got as f64 - want).abs() < 1e-4,
                    "{isa:?} {what}: {got} vs {want} ({n},{c},{o},{h},{w})"
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
                        if let Some(dw) = &dw {
                            close(dw[(oc * c + ic) * 9 + t], s, "dw");
                        }
                    }
                }
            }
        }
    }
}
