//! The per-block work of the probe objective, fused so each feature row is read from memory once:
//! logits (K dot products), softmax/cross-entropy in f64, then the gradient update `g_c += r_c·x`
//! while the row is still in L1 (f32 partial sums over 64 rows, then f64). Portable plain loops
//! that LLVM vectorises; on x86-64 CPUs with AVX2+FMA the block is compiled a second time with
//! those features and the logits come from an intrinsics kernel (up to 8 classes per pass over the
//! row, one accumulator chain each), picked at run time.

/// Loss sum and gradient over a block of rows (not averaged); `gw` is [k×d], `gb` [k].
pub struct BlockSums {
    pub loss: f64,
    pub gw: Vec<f64>,
    pub gb: Vec<f64>,
}

/// Dispatches to the AVX2+FMA build when the CPU has it.
pub fn block_loss_grad(
    x: &[f32],
    y: &[u32],
    w: &[f32],
    bias: &[f64],
    d: usize,
    k: usize,
) -> BlockSums {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            assert!(w.len() >= k * d, "probe kernel: weights shorter than k * d");
            return unsafe { block_avx2(x, y, w, bias, d, k) };
        }
    }
    block_generic(x, y, w, bias, d, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(
    x: &[f32],
    y: &[u32],
    w: &[f32],
    bias: &[f64],
    d: usize,
    k: usize,
) -> BlockSums {
    // SAFETY: the caller checked the CPU features and that `w` holds k rows of d.
    block_impl(x, y, bias, d, k, |row, out| unsafe {
        avx2::logits(row, w, d, k, out)
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `out[c] = w[c] · row` for classes `c0 .. c0 + G`: the row is loaded once per 8 lanes and
    /// feeds G independent FMA chains.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const G: usize>(row: &[f32], w: &[f32], d: usize, c0: usize, out: &mut [f32]) {
        let chunks = d / 8;
        let (rp, wp) = (row.as_ptr(), w.as_ptr().add(c0 * d));
        let mut acc = [_mm256_setzero_ps(); G];
        for i in 0..chunks {
            let xv = _mm256_loadu_ps(rp.add(i * 8));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wp.add(j * d + i * 8)), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            let wc = &w[(c0 + j) * d..(c0 + j + 1) * d];
            let tail: f32 = (chunks * 8..d).map(|t| row[t] * wc[t]).sum();
            out[c0 + j] = lanes.iter().sum::<f32>() + tail;
        }
    }

    /// `out[c] = w[c] · row` for all `k` classes (`w` is [k, d], `row` has d elements).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn logits(row: &[f32], w: &[f32], d: usize, k: usize, out: &mut [f32]) {
        debug_assert!(row.len() >= d && w.len() >= k * d && out.len() >= k);
        let mut c0 = 0;
        while k - c0 >= 8 {
            group::<8>(row, w, d, c0, out);
            c0 += 8;
        }
        if k - c0 >= 4 {
            group::<4>(row, w, d, c0, out);
            c0 += 4;
        }
        if k - c0 >= 2 {
            group::<2>(row, w, d, c0, out);
            c0 += 2;
        }
        if k - c0 == 1 {
            group::<1>(row, w, d, c0, out);
        }
    }
}

const LANES: usize = 8;
/// Rows summed in f32 before the partial gradient is added into f64: keeps f32 round-off to
/// ~64 terms at a conversion cost of ~1/64 of the FMAs.
const F32_ROWS: usize = 64;

/// Independent accumulators in `dot`: one 8-lane chain would wait on the FMA latency (4-5
/// cycles) every step; four chains keep both FMA units busy.
const CHAINS: usize = 4;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; LANES]; CHAINS];
    let (ac, bc) = (
        a.chunks_exact(LANES * CHAINS),
        b.chunks_exact(LANES * CHAINS),
    );
    let (ra, rb) = (ac.remainder(), bc.remainder());
    for (xa, xb) in ac.zip(bc) {
        for (j, acc) in acc.iter_mut().enumerate() {
            for l in 0..LANES {
                acc[l] += xa[j * LANES + l] * xb[j * LANES + l];
            }
        }
    }
    let (ra8, rb8) = (ra.chunks_exact(LANES), rb.chunks_exact(LANES));
    let tail: f32 = ra8
        .remainder()
        .iter()
        .zip(rb8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ra8.zip(rb8) {
        for l in 0..LANES {
            acc[0][l] += xa[l] * xb[l];
        }
    }
    let mut lanes = [0f32; LANES];
    for chain in &acc {
        for l in 0..LANES {
            lanes[l] += chain[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

fn block_generic(x: &[f32], y: &[u32], w: &[f32], bias: &[f64], d: usize, k: usize) -> BlockSums {
    block_impl(x, y, bias, d, k, |row, out| {
        for (c, o) in out.iter_mut().enumerate() {
            *o = dot(row, &w[c * d..(c + 1) * d]);
        }
    })
}

/// The block loop, given how to compute one row's logits (`out[c] = w[c] · row`).
#[inline(always)]
fn block_impl(
    x: &[f32],
    y: &[u32],
    bias: &[f64],
    d: usize,
    k: usize,
    logits: impl Fn(&[f32], &mut [f32]),
) -> BlockSums {
    let mut gw = vec![0f64; k * d];
    let mut z = vec![0f32; k];
    let mut acc = vec![0f32; k * d];
    let mut gb = vec![0f64; k];
    let mut p = vec![0f64; k];
    let mut loss = 0.0;
    for (i, (row, &label)) in x.chunks_exact(d).zip(y).enumerate() {
        let mut max = f64::NEG_INFINITY;
        logits(row, &mut z);
        for c in 0..k {
            p[c] = f64::from(z[c]) + bias[c];
            max = max.max(p[c]);
        }
        let mut sum = 0.0;
        for v in p.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let label = label as usize;
        loss += sum.ln() - p[label].ln();
        for c in 0..k {
            let r = p[c] / sum - if c == label { 1.0 } else { 0.0 };
            gb[c] += r;
            axpy(r as f32, row, &mut acc[c * d..(c + 1) * d]);
        }
        if (i + 1) % F32_ROWS == 0 || i + 1 == y.len() {
            for (g, a) in gw.iter_mut().zip(acc.iter_mut()) {
                *g += f64::from(*a);
                *a = 0.0;
            }
        }
    }
    BlockSums { loss, gw, gb }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The dispatched kernel (AVX2 intrinsics where available) equals the portable loops, for
    /// class counts that exercise every group size and a dimension with a scalar tail.
    #[test]
    fn dispatched_kernel_matches_portable_loops() {
        for (k, d, rows) in [
            (11, 35, 70),
            (4, 16, 9),
            (7, 8, 3),
            (1, 5, 4),
            (23, 64, 130),
        ] {
            let x = pseudo(rows * d, 1);
            let w = pseudo(k * d, 2);
            let bias: Vec<f64> = pseudo(k, 3).iter().map(|&v| f64::from(v)).collect();
            let y: Vec<u32> = (0..rows).map(|i| (i * 7 % k) as u32).collect();
            let a = block_loss_grad(&x, &y, &w, &bias, d, k);
            let b = block_generic(&x, &y, &w, &bias, d, k);
            assert!(
                (a.loss - b.loss).abs() <= 1e-5 * b.loss.abs().max(1.0),
                "k={k} d={d}: loss {} vs {}",
                a.loss,
                b.loss
            );
            for (u, v) in a.gw.iter().zip(&b.gw).chain(a.gb.iter().zip(&b.gb)) {
                assert!((u - v).abs() <= 1e-4, "k={k} d={d}: gradient {u} vs {v}");
            }
        }
    }
}
