//! The per-block work of the probe objective, fused so each feature row is read from memory once:
//! logits (K dot products), softmax/cross-entropy in f64, then the gradient update `g_c += r_c·x`
//! while the row is still in L1 (f32 partial sums over 64 rows, then f64). Written as plain loops over 8-wide lane arrays that LLVM
//! vectorises; on x86-64 CPUs with AVX2+FMA the same code is compiled a second time with those
//! features enabled and picked at run time.

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
    block_generic(x, y, w, bias, d, k)
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

#[inline(always)]
fn block_generic(x: &[f32], y: &[u32], w: &[f32], bias: &[f64], d: usize, k: usize) -> BlockSums {
    let mut gw = vec![0f64; k * d];
    let mut acc = vec![0f32; k * d];
    let mut gb = vec![0f64; k];
    let mut p = vec![0f64; k];
    let mut loss = 0.0;
    for (i, (row, &label)) in x.chunks_exact(d).zip(y).enumerate() {
        let mut max = f64::NEG_INFINITY;
        for c in 0..k {
            p[c] = f64::from(dot(row, &w[c * d..(c + 1) * d])) + bias[c];
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
