//! The two passes with AVX2 intrinsics: 8 lanes per instruction, the same operations per value as
//! the portable code (`mul` then `add`, no FMA; `to_u8` as min, +0.5, truncation, and saturation).

use super::{HTap, Plan, RowsPx, ROWS};
use crate::image::RgbImage;
use std::arch::x86_64::*;

/// `to_u8` of 8 lanes, except for the clamp at 0: that is left to the unsigned saturation of
/// the packs to bytes that follow (`_mm256_packus_epi32`, then `_mm256_packus_epi16`), which
/// gives the same bytes: negative values truncate to 0 or a negative integer, NaN and huge
/// negative values to `i32::MIN`, all packed to 0; the rest lies in 0..=255.
#[inline]
#[target_feature(enable = "avx2")]
fn round_epi32(v: __m256) -> __m256i {
    // `min(255, NaN)` is NaN (the second operand), which then packs to 0 as `to_u8` gives.
    let v = _mm256_min_ps(_mm256_set1_ps(255.0), v);
    _mm256_cvttps_epi32(_mm256_add_ps(v, _mm256_set1_ps(0.5)))
}

/// Both passes (see `super::run`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn run(img: &RgbImage, plan: &Plan, tmp: &mut [u8], out: &mut [u8]) {
    // Checks for the unchecked accesses below.
    let weights = &plan.hx.weights;
    for t in &plan.htaps {
        assert!(t.start + t.n <= plan.px_len && t.weights + t.n <= weights.len());
    }
    assert!(plan.ring.is_multiple_of(ROWS) && tmp.len() == plan.ring * plan.tmp_stride);
    assert!(plan.tmp_stride >= plan.stride + 2 && plan.stride == plan.htaps.len() * 3);
    for &(_, off) in &plan.vtaps {
        assert!(off + plan.stride <= tmp.len());
    }
    let mut h = Horizontal {
        px: vec![[0.0; 4 * ROWS]; plan.px_len],
        // Byte shuffles taking pixel j of 12 bytes R G B R G B .. (in each 128-bit half) to
        // 32-bit lanes R G B 0 (a negative index gives a zero byte).
        spread: std::array::from_fn(|j| {
            let m: [i8; 16] = std::array::from_fn(|b| match (b / 4, b % 4) {
                (c @ 0..=2, 0) => (3 * j + c) as i8,
                _ => -1,
            });
            // SAFETY: 16 bytes.
            let m = unsafe { _mm_loadu_si128(m.as_ptr() as *const __m128i) };
            _mm256_broadcastsi128_si256(m)
        }),
        // Within each 128-bit half, bytes 0-2 and 8-10 (row 0 or 1 of two pixels), then 4-6
        // and 12-14 (row 2 or 3), each followed by two zeros.
        pair: _mm256_broadcastsi128_si256(_mm_setr_epi8(
            0, 1, 2, 8, 9, 10, -1, -1, 4, 5, 6, 12, 13, 14, -1, -1,
        )),
    };
    let mut done = 0;
    for (j, dst) in out.chunks_exact_mut(plan.stride).enumerate() {
        while done < plan.ready[j] {
            // SAFETY: checked above.
            unsafe { h.group(img, plan, done, &mut tmp[plan.group_range(done)]) };
            done += ROWS;
        }
        // SAFETY: checked above.
        unsafe { vertical(plan, j, tmp, dst) };
    }
}

/// State of the horizontal pass.
struct Horizontal {
    /// The current group of source rows as floats (see `RowsPx`).
    px: Vec<RowsPx>,
    spread: [__m256i; 4],
    pair: __m256i,
}

impl Horizontal {
    /// Horizontal pass (see `super::horizontal`), into the `ROWS` rows at `dst`.
    ///
    /// # Safety
    /// The checks at the top of `run`.
    #[target_feature(enable = "avx2")]
    unsafe fn group(&mut self, img: &RgbImage, plan: &Plan, r0: usize, dst: &mut [u8]) {
        let cols = plan.cols;
        if cols == 0 {
            return;
        }
        let (src, _) = plan.source_rows(img, r0);
        // The next rows are converted after this group's taps: fetch them meanwhile, one
        // cache line per pair of output pixels (each row is a short stream that the hardware
        // prefetchers pick up late).
        let next = if r0 + ROWS < plan.nrows {
            Some(plan.source_rows(img, r0 + ROWS).0)
        } else {
            None
        };
        let lines = (cols * 3).div_ceil(64);
        let per_pair = (ROWS * lines).div_ceil((plan.htaps.len() / 2).max(1));
        let mut fetch = 0;
        let pxp = self.px.as_mut_ptr() as *mut f32;
        // Source rows g, g + 1 into lanes 4g..4g+8 of every pixel: R, G, B, 0 of each row.
        for g in (0..ROWS).step_by(2) {
            let (s0, s1) = (src[g], src[g + 1]);
            let mut p = 0;
            // 4 pixels of both rows from two 16-byte loads (12 bytes used), spread to 32 bits
            // by byte shuffles: one 8-float store per pixel.
            while p + 4 <= cols && 3 * p + 16 <= s0.len().min(s1.len()) {
                // SAFETY: 3 * p + 16 <= both lengths; p + 4 <= cols <= px.len(), g + 8 <= 16.
                unsafe {
                    let v = _mm256_loadu2_m128i(
                        s1.as_ptr().add(3 * p) as *const __m128i,
                        s0.as_ptr().add(3 * p) as *const __m128i,
                    );
                    let q = pxp.add(16 * p + 4 * g);
                    for (j, spread) in self.spread.iter().enumerate() {
                        let f = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, *spread));
                        _mm256_storeu_ps(q.add(16 * j), f);
                    }
                }
                p += 4;
            }
            for (p, q) in self.px[..cols].iter_mut().enumerate().skip(p) {
                let (a, b) = (&s0[3 * p..3 * p + 3], &s1[3 * p..3 * p + 3]);
                q[4 * g..4 * g + 8].copy_from_slice(&[
                    a[0] as f32,
                    a[1] as f32,
                    a[2] as f32,
                    0.0,
                    b[0] as f32,
                    b[1] as f32,
                    b[2] as f32,
                    0.0,
                ]);
            }
        }
        let (ts, weights, htaps) = (plan.tmp_stride, &plan.hx.weights, &plan.htaps);
        assert!(dst.len() == ROWS * ts);
        let dst = dst.as_mut_ptr();
        let mut o = 0;
        while o + 2 <= htaps.len() {
            // SAFETY: the taps were checked against px and weights (top of `run`).
            let (a0, a1) = unsafe { taps4(pxp, weights, htaps[o]) };
            let (b0, b1) = unsafe { taps4(pxp, weights, htaps[o + 1]) };
            if let Some(next) = next {
                for _ in 0..per_pair {
                    if fetch < ROWS * lines {
                        let (row, line) = (fetch % ROWS, fetch / ROWS);
                        // In bounds: 64 * line < 3 * cols <= next[row].len().
                        let line_start = next[row].as_ptr().wrapping_add(64 * line);
                        _mm_prefetch::<_MM_HINT_T0>(line_start as *const i8);
                        fetch += 1;
                    }
                }
            }
            // Rows 0, 1 | 2, 3 of pixels o and o + 1, as 16 bits: [o: 0, 2; o+1: 0, 2 | o: 1,
            // 3; o+1: 1, 3], then bytes [0: o, 2: o, 0: o+1, 2: o+1 | 1: .., 3: ..]; compacted
            // to R G B R G B 0 0 per row.
            let b8 = _mm256_packus_epi16(
                _mm256_packus_epi32(round_epi32(a0), round_epi32(a1)),
                _mm256_packus_epi32(round_epi32(b0), round_epi32(b1)),
            );
            let c = _mm256_shuffle_epi8(b8, self.pair);
            let (l, h) = (_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c));
            // 8 bytes per row: the last 2 are overwritten by the next pixels, or land in the
            // row's padding. SAFETY: ROWS rows of `ts` bytes at dst, 3 * o + 8 <= stride + 2.
            unsafe {
                let d = dst.add(3 * o);
                _mm_storel_epi64(d as *mut __m128i, l);
                _mm_storel_epi64(d.add(ts) as *mut __m128i, h);
                _mm_storeh_pd(d.add(2 * ts) as *mut f64, _mm_castsi128_pd(l));
                _mm_storeh_pd(d.add(3 * ts) as *mut f64, _mm_castsi128_pd(h));
            }
            o += 2;
        }
        if o < htaps.len() {
            // SAFETY: as above.
            let (a0, a1) = unsafe { taps4(pxp, weights, htaps[o]) };
            // Bytes [0, 2, .. | 1, 3, ..] as above, 4 per row (the 4th in the padding).
            let w16 = _mm256_packus_epi32(round_epi32(a0), round_epi32(a1));
            let b8 = _mm256_packus_epi16(w16, w16);
            let (l, h) = (
                _mm256_castsi256_si128(b8),
                _mm256_extracti128_si256::<1>(b8),
            );
            let px4 = [
                _mm_cvtsi128_si32(l),
                _mm_cvtsi128_si32(h),
                _mm_extract_epi32::<1>(l),
                _mm_extract_epi32::<1>(h),
            ];
            for (g, &v) in px4.iter().enumerate() {
                // SAFETY: 3 * o + 4 <= stride + 2 <= ts.
                unsafe { (dst.add(g * ts + 3 * o) as *mut i32).write_unaligned(v) };
            }
        }
    }
}

/// Horizontal taps `t` of 4 rows: (rows 0, 1; rows 2, 3) as R G B x of each row.
///
/// # Safety
/// `t.start + t.n` converted pixels at `px` (16 floats each) and `t.weights + t.n` weights.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn taps4(px: *const f32, weights: &[f32], t: HTap) -> (__m256, __m256) {
    let mut a0 = _mm256_setzero_ps();
    let mut a1 = _mm256_setzero_ps();
    for k in 0..t.n {
        // SAFETY: per the contract.
        unsafe {
            let w = _mm256_set1_ps(*weights.get_unchecked(t.weights + k));
            let p = px.add(16 * (t.start + k));
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(w, _mm256_loadu_ps(p)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(w, _mm256_loadu_ps(p.add(8))));
        }
    }
    (a0, a1)
}

/// Vertical pass (see `super::vertical`): 32 columns at a time in 4 registers, then the rest
/// of the row one value at a time.
///
/// # Safety
/// The checks at the top of `run`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn vertical(plan: &Plan, j: usize, tmp: &[u8], dst: &mut [u8]) {
    let stride = plan.stride;
    let taps = &plan.vtaps[plan.vrange[j]..plan.vrange[j + 1]];
    let tp = tmp.as_ptr();
    let mut c0 = 0;
    while c0 + 32 <= stride {
        let mut a = [_mm256_setzero_ps(); 4];
        for &(wk, off) in taps {
            let w = _mm256_set1_ps(wk);
            for (q, a) in a.iter_mut().enumerate() {
                // SAFETY: off + stride <= tmp.len() (checked) and c0 + 32 <= stride.
                let v = unsafe { _mm_loadl_epi64(tp.add(off + c0 + 8 * q) as *const __m128i) };
                let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(w, v));
            }
        }
        // Columns [0-3 8-11 | 4-7 12-15] and [16-19 24-27 | 20-23 28-31] as 16 bits, then
        // bytes [0-3 8-11 16-19 24-27 | 4-7 ...], put back in order by 4-byte groups.
        let b = _mm256_packus_epi16(
            _mm256_packus_epi32(round_epi32(a[0]), round_epi32(a[1])),
            _mm256_packus_epi32(round_epi32(a[2]), round_epi32(a[3])),
        );
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: c0 + 32 <= stride = dst.len().
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(c0) as *mut __m256i, b) };
        c0 += 32;
    }
    for (x, d) in dst.iter_mut().enumerate().skip(c0) {
        let mut acc = 0f32;
        for &(wk, off) in taps {
            acc += wk * tmp[off + x] as f32;
        }
        *d = super::to_u8(acc);
    }
}
