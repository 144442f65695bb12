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
    /// Quantization table (zigzag order) as `f32`.
    q: [f32; 64],
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
        Idct {
            nx,
            ny,
            a,
            at,
            keep,
            q: quant_zigzag.map(|v| v as f32),
        }
    }

    /// Transforms the quantized zigzag block `coefs` (non-zero AC positions in `nz`) into `nx x ny`
    /// bytes at `out[0]`, rows `stride` apart.
    ///
    /// First pass per non-zero coefficient (u, v): `t[v] += F(u, v) * a[..][u]`, an 8-lane update, so
    /// the work scales with the coefficients present rather than with 64; second pass per output row.
    #[inline(always)]
    pub fn block(&self, coefs: &[i16], nz: u64, out: &mut [u8], stride: usize) {
        let (nx, ny) = (self.nx, self.ny);
        let active = nz & self.keep & !1;
        if active == 0 {
            // DC only: a flat block (A[x][0]^2 = 1/8).
            let v = to_u8(coefs[0] as f32 * self.q[0] * 0.125 + 128.0);
            for y in 0..ny {
                out[y * stride..y * stride + nx].fill(v);
            }
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
            let c = coefs[k] as f32 * self.q[k];
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

    #[test]
    fn full_size_matches_the_standard_formula() {
        let q = [1u16; 64];
        let idct = Idct::new(8, 8, &q);
        let mut coefs = [0i16; 64];
        let mut nz = 0u64;
        let mut nat = [0f64; 64];
        for k in 0..20 {
            let v = ((k * 37) % 23) as i16 - 11;
            coefs[k] = v;
            nat[ZIGZAG[k]] = v as f64;
            if k > 0 && v != 0 {
                nz |= 1 << k;
            }
        }
        coefs[0] = -300;
        nat[0] = -300.0;
        let mut out = [0u8; 64];
        idct.block(&coefs, nz, &mut out, 8);
        let r = reference(&nat);
        for i in 0..64 {
            let expect = r[i].round().clamp(0.0, 255.0);
            assert!(
                (out[i] as f64 - expect).abs() <= 1.0,
                "pixel {i}: {} vs {}",
                out[i],
                r[i]
            );
        }
    }

    #[test]
    fn reduced_sizes_are_cell_means_of_the_full_transform() {
        let q = [3u16; 64];
        let mut coefs = [0i16; 64];
        let mut nz = 0u64;
        for k in 0..40 {
            coefs[k] = ((k * 53) % 29) as i16 - 14;
            if k > 0 && coefs[k] != 0 {
                nz |= 1 << k;
            }
        }
        coefs[0] = 60;
        // Unrounded full transform in f64.
        let mut nat = [0f64; 64];
        for k in 0..64 {
            nat[ZIGZAG[k]] = coefs[k] as f64 * 3.0;
        }
        let full = reference(&nat);
        for n in [4usize, 2, 1] {
            let s = 8 / n;
            let mut out = vec![0u8; n * n];
            Idct::new(n, n, &q).block(&coefs, nz, &mut out, n);
            for y in 0..n {
                for x in 0..n {
                    let mut m = 0.0;
                    for j in 0..s {
                        for i in 0..s {
                            m += full[(s * y + j) * 8 + s * x + i];
                        }
                    }
                    let m = (m / (s * s) as f64).round().clamp(0.0, 255.0);
                    assert!(
                        (out[y * n + x] as f64 - m).abs() <= 1.0,
                        "n {n} ({x}, {y}): {} vs {m}",
                        out[y * n + x]
                    );
                }
            }
        }
    }
}
