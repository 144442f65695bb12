//! Dequantization and inverse DCT of a block to `n x n` pixels, n in {8, 4, 2, 1}.
//!
//! A reduced-size output is the mean of each `s x s` cell (s = 8 / n) of the full inverse DCT, folded
//! into the basis: `A[x][u] = C(u)/2 * mean_j cos((2 (s x + j) + 1) u pi / 16)`. That is a box
//! filter applied in the DCT domain, the same result as libjpeg's reduced IDCTs
//! (`scale_num/scale_denom`, Pillow's `draft`); truncating to the `n x n` lowest frequencies instead
//! would ring at edges. The second pass (and everything after the IDCT) shrinks by `s`, and no
//! resampling of the full-size block is needed. Arithmetic is `f32` separable matrix products over
//! 8-lane rows, which the compiler turns into AVX2 code on the dispatched path.

/// Zigzag index -> natural (row-major) index.
pub(crate) const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Zigzag index -> storage index of the coefficient blocks: column-major natural order,
/// `u * 8 + v` for horizontal frequency `u` and vertical frequency `v`, so each column of
/// coefficients is 8 contiguous values (one vector load in the AVX2 transform).
pub(crate) const ZZ_COL: [usize; 64] = {
    let mut t = [0usize; 64];
    let mut k = 0;
    while k < 64 {
        let nat = ZIGZAG[k];
        t[k] = (nat % 8) * 8 + nat / 8;
        k += 1;
    }
    t
};

/// Transform to `nx x ny` output pixels.
#[derive(Clone)]
pub(crate) struct Idct {
    nx: usize,
    ny: usize,
    /// Vertical basis `a[y][v]` for outputs `y < ny`.
    a: [[f32; 8]; 8],
    /// Horizontal basis transposed, `at[u][x]` for outputs `x < nx`, zero for `x >= nx`.
    at: [[f32; 8]; 8],
    /// Zigzag positions of the coefficients that contribute to an `n x n` output.
    keep: u64,
    /// Quantization table in storage (`ZZ_COL`) order, as `f32`.
    q: [f32; 64],
    /// Horizontal basis `ax[x][u]`.
    ax: [[f32; 8]; 8],
    /// Dequantization folded with the factored transform's input scaling (see `aan_8x8`):
    /// `q * s(u) * s(v) / 8`, storage order.
    q_aan: [f32; 64],
}

/// Input scaling of the Arai-Agui-Nakajima factorization: `s(0) = 1`, `s(k) = sqrt(2) cos(k pi / 16)`.
fn aan_scale(k: usize) -> f64 {
    if k == 0 {
        1.0
    } else {
        std::f64::consts::SQRT_2 * (k as f64 * std::f64::consts::PI / 16.0).cos()
    }
}

impl Idct {
    pub fn new(nx: usize, ny: usize, quant_zigzag: &[u16; 64]) -> Idct {
        let basis = |n: usize| {
            assert!(matches!(n, 1 | 2 | 4 | 8));
            let s = 8 / n;
            let mut b = [[0f32; 8]; 8];
            for (x, row) in b.iter_mut().enumerate().take(n) {
                for (u, e) in row.iter_mut().enumerate() {
                    let c = if u == 0 {
                        std::f64::consts::FRAC_1_SQRT_2
                    } else {
                        1.0
                    };
                    let mean = (0..s)
                        .map(|j| {
                            let t = (2 * (s * x + j) + 1) as f64 * u as f64;
                            (t * std::f64::consts::PI / 16.0).cos()
                        })
                        .sum::<f64>()
                        / s as f64;
                    *e = (c / 2.0 * mean) as f32;
                }
            }
            b
        };
        let (bx, a) = (basis(nx), basis(ny));
        let mut at = [[0f32; 8]; 8];
        for x in 0..8 {
            for u in 0..8 {
                at[u][x] = bx[x][u];
            }
        }
        // Coefficients that contribute: all, except those whose cell means vanish (u or v = 4 for a
        // 4-point output; every AC for a 1-point one).
        let mut keep = 0u64;
        for (k, &nat) in ZIGZAG.iter().enumerate() {
            let (v, u) = (nat / 8, nat % 8);
            if (0..nx).any(|x| bx[x][u].abs() > 1e-6) && (0..ny).any(|y| a[y][v].abs() > 1e-6) {
                keep |= 1 << k;
            }
        }
        let mut q = [0f32; 64];
        let mut q_aan = [0f32; 64];
        for k in 0..64 {
            q[ZZ_COL[k]] = quant_zigzag[k] as f32;
            let (u, v) = (ZZ_COL[k] / 8, ZZ_COL[k] % 8);
            q_aan[ZZ_COL[k]] = (quant_zigzag[k] as f64 * aan_scale(u) * aan_scale(v) / 8.0) as f32;
        }
        Idct {
            q_aan,
            nx,
            ny,
            a,
            at,
            keep,
            q,
            ax: bx,
        }
    }

    /// Transforms a quantized block (storage order `ZZ_COL`, non-zero AC positions in `nz` by
    /// zigzag index) into `nx x ny` bytes at `out[0]`, rows `stride` apart.
    ///
    /// Portable path. First pass per non-zero coefficient (u, v): `t[v] += F(u, v) * a[..][u]`, an
    /// 8-lane update; second pass per output row.
    #[inline(always)]
    pub fn block(&self, coefs: &[i16], nz: u64, out: &mut [u8], stride: usize) {
        let (nx, ny) = (self.nx, self.ny);
        let active = nz & self.keep & !1;
        if active == 0 {
            self.flat(coefs, out, stride);
            return;
        }
        let mut t = [[0f32; 8]; 8];
        let dc = coefs[0] as f32 * self.q[0];
        for x in 0..8 {
            t[0][x] = dc * self.at[0][x];
        }
        let mut rows_used = 1;
        let mut bits = active;
        while bits != 0 {
            let k = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let nat = ZIGZAG[k];
            let (v, u) = (nat / 8, nat % 8);
            let c = coefs[ZZ_COL[k]] as f32 * self.q[ZZ_COL[k]];
            let row = &mut t[v];
            for x in 0..8 {
                row[x] += c * self.at[u][x];
            }
            rows_used = rows_used.max(v + 1);
        }
        for y in 0..ny {
            let mut acc = [128f32; 8];
            for v in 0..rows_used {
                let c = self.a[y][v];
                for x in 0..8 {
                    acc[x] += c * t[v][x];
                }
            }
            let bytes = acc.map(to_u8);
            out[y * stride..y * stride + nx].copy_from_slice(&bytes[..nx]);
        }
    }

    /// A block with only a DC coefficient (after dropping coefficients that do not contribute)
    /// is flat: `A[x][0]^2 = 1/8`.
    #[inline(always)]
    fn flat(&self, coefs: &[i16], out: &mut [u8], stride: usize) {
        let v = to_u8(coefs[0] as f32 * self.q[0] * 0.125 + 128.0);
        for y in 0..self.ny {
            out[y * stride..y * stride + self.nx].fill(v);
        }
    }

    /// AVX2 path, same result as [`Idct::block`] up to float rounding: columns of coefficients
    /// are loaded as vectors, `T^T = A_x F^T` with broadcast constants, an 8x8 transpose, then
    /// `out = A_y T` the same way.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `coefs` must hold 64 values and `out` the `ny` rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_avx2(&self, coefs: &[i16], nz: u64, out: &mut [u8], stride: usize) {
        use std::arch::x86_64::*;
        let (nx, ny) = (self.nx, self.ny);
        let active = nz & self.keep & !1;
        if active == 0 {
            self.flat(coefs, out, stride);
            return;
        }
        assert!(coefs.len() >= 64 && out.len() >= (ny - 1) * stride + nx);
        if nx == 8 && ny == 8 {
            // SAFETY: as this function's (checked just above).
            unsafe { self.aan_8x8(coefs, out, stride) };
            return;
        }
        // Straight-line code with constant trip counts (fully unrolled, everything in registers):
        // cheaper than skipping zero frequencies with data-dependent branches.
        let mut col = [_mm256_setzero_ps(); 8];
        for (u, c) in col.iter_mut().enumerate() {
            let raw = _mm_loadu_si128(coefs.as_ptr().add(u * 8) as *const __m128i);
            let f = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(raw));
            *c = _mm256_mul_ps(f, _mm256_loadu_ps(self.q.as_ptr().add(u * 8)));
        }
        // tt[x] lane v = sum_u ax[x][u] F(u, v).
        let mut tt = [_mm256_setzero_ps(); 8];
        for (x, t) in tt.iter_mut().enumerate() {
            let mut acc = _mm256_setzero_ps();
            for u in 0..8 {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(self.ax[x][u]), col[u], acc);
            }
            *t = acc;
        }
        // Transpose: t[v] lane x.
        let t = transpose8(tt);
        let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
        for y in 0..ny {
            let mut acc = _mm256_set1_ps(128.0);
            for v in 0..8 {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(self.a[y][v]), t[v], acc);
            }
            let i = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(acc, zero), top));
            let p16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
            let p8 = _mm_packus_epi16(p16, p16);
            let dst = out.as_mut_ptr().add(y * stride);
            if nx == 8 {
                _mm_storel_epi64(dst as *mut __m128i, p8);
            } else {
                let bytes: [u8; 16] = std::mem::transmute(p8);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, nx);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Idct {
    /// Full-size transform by the Arai-Agui-Nakajima factorization (scaled 1-D IDCT: 5 multiplies
    /// and 29 additions per 8 points, on 8 lanes at once), a third of the operations of the matrix
    /// products above. Inputs are pre-scaled by `q_aan`; pass 1 runs over the horizontal
    /// frequencies (lanes: vertical frequency), then a transpose, pass 2 over the vertical ones.
    ///
    /// # Safety
    /// AVX2 and FMA available; 64 coefficients, 8 rows of 8 bytes `stride` apart at `out`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn aan_8x8(&self, coefs: &[i16], out: &mut [u8], stride: usize) {
        use std::arch::x86_64::*;
        let mut col = [_mm256_setzero_ps(); 8];
        for (u, c) in col.iter_mut().enumerate() {
            // SAFETY: 64 coefficients and 64 factors.
            unsafe {
                let raw = _mm_loadu_si128(coefs.as_ptr().add(u * 8) as *const __m128i);
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(raw));
                *c = _mm256_mul_ps(f, _mm256_loadu_ps(self.q_aan.as_ptr().add(u * 8)));
            }
        }
        let rows = transpose8(aan_1d(col));
        let mut pix = aan_1d(rows);
        let (zero, top, half) = (
            _mm256_setzero_ps(),
            _mm256_set1_ps(255.0),
            _mm256_set1_ps(128.0),
        );
        for (y, p) in pix.iter_mut().enumerate() {
            let v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(*p, half), zero), top);
            let i = _mm256_cvtps_epi32(v);
            let p16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
            let p8 = _mm_packus_epi16(p16, p16);
            // SAFETY: row y of 8 bytes (the caller's contract).
            unsafe { _mm_storel_epi64(out.as_mut_ptr().add(y * stride) as *mut __m128i, p8) };
        }
    }
}

/// One scaled 1-D inverse DCT (AAN) over the 8 vectors `f[k]` (frequency k), lane by lane:
/// returns the 8 samples. Inputs must carry the `aan_scale` factors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn aan_1d(f: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let (add, sub, mul) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);
    let c = |v: f64| _mm256_set1_ps(v as f32);
    let sqrt2 = c(std::f64::consts::SQRT_2); // 2 cos(4 pi / 16)
    let c2x2 = c(2.0 * (2.0 * std::f64::consts::PI / 16.0).cos()); // 2 cos(2 pi / 16)
    let c26 = c(2.0
        * ((2.0 * std::f64::consts::PI / 16.0).cos() - (6.0 * std::f64::consts::PI / 16.0).cos()));
    let c2p6 = c(2.0
        * ((2.0 * std::f64::consts::PI / 16.0).cos() + (6.0 * std::f64::consts::PI / 16.0).cos()));
    // Even part: frequencies 0, 2, 4, 6.
    let e10 = add(f[0], f[4]);
    let e11 = sub(f[0], f[4]);
    let e13 = add(f[2], f[6]);
    let e12 = sub(mul(sub(f[2], f[6]), sqrt2), e13);
    let (t0, t3) = (add(e10, e13), sub(e10, e13));
    let (t1, t2) = (add(e11, e12), sub(e11, e12));
    // Odd part: frequencies 1, 3, 5, 7.
    let z13 = add(f[5], f[3]);
    let z10 = sub(f[5], f[3]);
    let z11 = add(f[1], f[7]);
    let z12 = sub(f[1], f[7]);
    let t7 = add(z11, z13);
    let o11 = mul(sub(z11, z13), sqrt2);
    let z5 = mul(add(z10, z12), c2x2);
    let o10 = sub(mul(z12, c26), z5);
    let o12 = sub(z5, mul(z10, c2p6));
    let t6 = sub(o12, t7);
    let t5 = sub(o11, t6);
    let t4 = add(o10, t5);
    [
        add(t0, t7),
        add(t1, t6),
        add(t2, t5),
        sub(t3, t4),
        add(t3, t4),
        sub(t2, t5),
        sub(t1, t6),
        sub(t0, t7),
    ]
}

/// Transposes 8 rows of 8 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Rounds to nearest and clamps to 0..=255. Adding 1.5 * 2^23 puts the rounded integer in the low
/// mantissa bits: unlike an `as` cast (saturating, scalar on x86) this vectorizes.
#[inline(always)]
pub(crate) fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 12_582_912.0).to_bits() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 2-D formula of T.81 A.3.3, in f64.
    fn reference(coefs_nat: &[f64; 64]) -> [f64; 64] {
        let mut out = [0f64; 64];
        let c = |u: usize| {
            if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            }
        };
        for y in 0..8 {
            for x in 0..8 {
                let mut s = 0.0;
                for v in 0..8 {
                    for u in 0..8 {
                        s += c(u)
                            * c(v)
                            * coefs_nat[v * 8 + u]
                            * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                            * ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0).cos();
                    }
                }
                out[y * 8 + x] = s / 4.0 + 128.0;
            }
        }
        out
    }

    /// Runs both code paths (when the CPU has AVX2) and checks they agree to one level.
    fn transform(idct: &Idct, coefs: &[i16; 64], nz: u64, out: &mut [u8], stride: usize) {
        idct.block(coefs, nz, out, stride);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let mut other = vec![0u8; out.len()];
            unsafe { idct.block_avx2(coefs, nz, &mut other, stride) };
            for (a, b) in out.iter().zip(&other) {
                assert!(a.abs_diff(*b) <= 1, "portable {a} vs avx2 {b}");
            }
        }
    }

    /// A block from zigzag-ordered values: storage array and non-zero mask.
    fn block_from_zigzag(values: &[i16; 64]) -> ([i16; 64], u64) {
        let mut coefs = [0i16; 64];
        let mut nz = 0u64;
        for k in 0..64 {
            coefs[ZZ_COL[k]] = values[k];
            if k > 0 && values[k] != 0 {
                nz |= 1 << k;
            }
        }
        (coefs, nz)
    }

    /// Transforms the zigzag-ordered quantized values `zz` with quantization `q` (both paths)
    /// and checks the result within one level of the T.81 formula.
    fn check_against_formula(zz: &[i16; 64], q: &[u16; 64], what: &str) {
        let idct = Idct::new(8, 8, q);
        let mut nat = [0f64; 64];
        for k in 0..64 {
            nat[ZIGZAG[k]] = zz[k] as f64 * q[k] as f64;
        }
        let (coefs, nz) = block_from_zigzag(zz);
        let mut out = [0u8; 64];
        transform(&idct, &coefs, nz, &mut out, 8);
        let r = reference(&nat);
        for i in 0..64 {
            let expect = r[i].round().clamp(0.0, 255.0);
            assert!(
                (out[i] as f64 - expect).abs() <= 1.0,
                "{what} pixel {i}: {} vs {}",
                out[i],
                r[i]
            );
        }
    }

    #[test]
    fn full_size_matches_the_standard_formula() {
        let mut zz = [0i16; 64];
        for (k, v) in zz.iter_mut().enumerate().take(20) {
            *v = ((k * 37) % 23) as i16 - 11;
        }
        zz[0] = -300;
        check_against_formula(&zz, &[1; 64], "fixed block");
    }

    /// Dense and sparse random blocks with a non-uniform quantization table: both paths (the AVX2
    /// one is the factored AAN transform at full size) within one level of the T.81 formula.
    #[test]
    fn random_blocks_match_the_standard_formula() {
        let mut q = [0u16; 64];
        for (k, v) in q.iter_mut().enumerate() {
            *v = 2 + (k as u16 * 7) % 31;
        }
        let mut state = 12345u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        for trial in 0..500 {
            let mut zz = [0i16; 64];
            let used = 1 + trial % 64;
            for v in zz.iter_mut().take(used) {
                *v = (next() % 41) as i16 - 20;
            }
            zz[0] = (next() % 200) as i16 - 100;
            check_against_formula(&zz, &q, &format!("trial {trial}"));
        }
    }

    #[test]
    fn reduced_sizes_are_cell_means_of_the_full_transform() {
        let q = [3u16; 64];
        let mut zz = [0i16; 64];
        for k in 0..40 {
            zz[k] = ((k * 53) % 29) as i16 - 14;
        }
        zz[0] = 60;
        let (coefs, nz) = block_from_zigzag(&zz);
        // Unrounded full transform in f64.
        let mut nat = [0f64; 64];
        for k in 0..64 {
            nat[ZIGZAG[k]] = zz[k] as f64 * 3.0;
        }
        let full = reference(&nat);
        for (nx, ny) in [(4usize, 4usize), (2, 2), (1, 1), (4, 8), (2, 4), (8, 4)] {
            let (sx, sy) = (8 / nx, 8 / ny);
            let mut out = vec![0u8; nx * ny];
            transform(&Idct::new(nx, ny, &q), &coefs, nz, &mut out, nx);
            for y in 0..ny {
                for x in 0..nx {
                    let mut m = 0.0;
                    for j in 0..sy {
                        for i in 0..sx {
                            m += full[(sy * y + j) * 8 + sx * x + i];
                        }
                    }
                    let m = (m / (sx * sy) as f64).round().clamp(0.0, 255.0);
                    assert!(
                        (out[y * nx + x] as f64 - m).abs() <= 1.0,
                        "{nx}x{ny} ({x}, {y}): {} vs {m}",
                        out[y * nx + x]
                    );
                }
            }
        }
    }
}
