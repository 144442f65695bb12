//! `exp` on the non-positive half-line in branch-free f32 arithmetic that the compiler
//! vectorises (libm's `expf` is a scalar call), and the row softmax built on it. Both users,
//! GELU's Gaussian and a softmax after subtracting the row maximum, only need `x <= 0`, which
//! keeps the range reduction free of overflow handling.

/// Below this, `exp` is flushed to 0 (exp(-87.3) is f32's smallest normal number).
const FLUSH_BELOW: f32 = -87.0;

/// `exp(x)` for `x <= 0` (larger inputs are outside its contract), relative error ~1e-7: the
/// usual split x = k ln2 + r with |r| <= ln2 / 2, a degree-7 Taylor polynomial for e^r
/// (truncation 6e-9) and 2^k assembled in the exponent bits. Below -87 it returns 0 (`expf`
/// gives subnormals there); NaN stays NaN and -inf gives 0.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    /// 1.5 · 2²³: adding and subtracting it rounds an f32 of magnitude < 2²² to an integer.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 in two parts; LN2_HI has few mantissa bits, so k * LN2_HI is exact for |k| <= 127.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let flush = x < FLUSH_BELOW;
    // A comparison, not `f32::max`, so that NaN passes through (max would replace it).
    let xc = if flush { FLUSH_BELOW } else { x };
    let shifted = xc * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    // e^r, Horner from the x^7 / 7! term down.
    const TAYLOR: [f32; 8] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ];
    let mut p = TAYLOR[7];
    for &c in TAYLOR[..7].iter().rev() {
        p = p * r + c;
    }
    // The integer k sits in the low mantissa bits of `shifted` (its bits minus ROUND's are k,
    // two's complement): integer arithmetic the compiler vectorises, where `k as i32` (a
    // saturating conversion) came out as scalar compare-and-move code. k in [-126, 0]: the
    // biased exponent k + 127 is a normal number's. For NaN the bits are garbage, but `p`
    // carries the NaN.
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let e = p * f32::from_bits(k_bits.wrapping_add(127) << 23);
    if flush {
        0.0
    } else {
        e
    }
}

/// Partial sums and maxima per row kept in this many independent lanes (a plain fold is one
/// serial chain: float reductions are not reordered by the compiler).
const LANES: usize = 16;

simd_kernel! {
    /// Each `n`-long row of `p` replaced by `softmax(scale * row)` (`scale > 0`): the attention
    /// probabilities from raw scores. A row containing NaN becomes all NaN.
    pub fn softmax_rows(p: &mut [f32], n: usize, scale: f32) {
        for row in p.chunks_exact_mut(n) {
            let (chunks, rest) = row.as_chunks_mut::<LANES>();
            let mut lane_max = [f32::NEG_INFINITY; LANES];
            for c in chunks.iter() {
                for (m, &v) in lane_max.iter_mut().zip(c) {
                    *m = m.max(v);
                }
            }
            let m = rest.iter().chain(&lane_max).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut lane_sum = [0f32; LANES];
            for c in chunks.iter_mut() {
                for (s, v) in lane_sum.iter_mut().zip(c) {
                    *v = exp_nonpositive((*v - m) * scale);
                    *s += *v;
                }
            }
            let mut sum: f32 = lane_sum.iter().sum();
            for v in rest.iter_mut() {
                *v = exp_nonpositive((*v - m) * scale);
                sum += *v;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_to_f32_precision() {
        for i in 0..=86_990 {
            let x = -(i as f32) * 1e-3;
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_nonpositive(-90.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_rows_match_f64_and_carry_nan() {
        // Rows of 65 (DeiT's tokens: 4 chunks of 16 and a remainder) and of 7 (remainder only).
        for n in [65usize, 7] {
            let mut p: Vec<f32> = (0..3 * n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.21)
                .collect();
            let raw = p.clone();
            let scale = 0.125;
            softmax_rows(&mut p, n, scale);
            for (row, raw) in p.chunks(n).zip(raw.chunks(n)) {
                let m = raw.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                let e: Vec<f64> = raw
                    .iter()
                    .map(|&v| ((v as f64 - m) * scale as f64).exp())
                    .collect();
                let s: f64 = e.iter().sum();
                for (&got, want) in row.iter().zip(e.iter().map(|v| v / s)) {
                    assert!((got as f64 - want).abs() <= 1e-6 * want, "{got} vs {want}");
                }
            }
            p[n + 3] = f32::NAN;
            softmax_rows(&mut p, n, scale);
            assert!(p[n..2 * n].iter().all(|v| v.is_nan()));
            assert!(p[..n].iter().chain(&p[2 * n..]).all(|v| v.is_finite()));
        }
    }
}
