//! BatchNorm kernels over channels-last data, the input seen as `M = N·H·W` rows of `C`
//! channels: per-channel sums run down the columns (f64, in a fixed order of row blocks), the
//! element-wise passes along the rows.

use rayon::prelude::*;

/// Rows per rayon task.
const ROWS: usize = 256;

/// `out[ch] = Σ_r f(r, ch)` over the `m` rows, in f64; the row blocks' partial sums are added in
/// block order, so the result does not depend on the thread count.
fn column_sums(m: usize, c: usize, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    let parts: Vec<Vec<f64>> = (0..m.div_ceil(ROWS))
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f64; c];
            for r in b * ROWS..((b + 1) * ROWS).min(m) {
                for (ch, a) in acc.iter_mut().enumerate() {
                    *a += f(r, ch);
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0f64; c];
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// Per channel `(mean, biased variance)` of `[M, C]` rows (two f64 passes).
pub fn channel_stats(x: &[f32], c: usize) -> Vec<(f64, f64)> {
    let m = x.len() / c.max(1);
    let count = m as f64;
    let mean: Vec<f64> = column_sums(m, c, |r, ch| x[r * c + ch] as f64)
        .into_iter()
        .map(|s| s / count)
        .collect();
    let var = column_sums(m, c, |r, ch| {
        let d = x[r * c + ch] as f64 - mean[ch];
        d * d
    });
    mean.iter()
        .zip(var)
        .map(|(&mu, v)| (mu, v / count))
        .collect()
}

/// `y = x * scale[ch] + shift[ch]`, then `max(y, 0)` when `relu`.
pub fn affine(x: &[f32], c: usize, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let block = ROWS * c.max(1);
    y.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                for ch in 0..c {
                    let v = xr[ch] * scale[ch] + shift[ch];
                    yr[ch] = if relu { v.max(0.0) } else { v };
                }
            }
        });
    y
}

/// [`affine`] with the block's shortcut `r` added before a ReLU, in the same pass.
pub fn affine_add_relu(x: &[f32], r: &[f32], c: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let block = ROWS * c.max(1);
    y.par_chunks_mut(block)
        .zip(x.par_chunks(block).zip(r.par_chunks(block)))
        .for_each(|(yc, (xc, rc))| {
            let rows = yc
                .chunks_exact_mut(c)
                .zip(xc.chunks_exact(c).zip(rc.chunks_exact(c)));
            for (yr, (xr, rr)) in rows {
                for ch in 0..c {
                    yr[ch] = (xr[ch] * scale[ch] + shift[ch] + rr[ch]).max(0.0);
                }
            }
        });
    y
}

/// `[Σ g·xhat | Σ g]` per channel (f32 results of f64 sums), `xhat = (x - mean) · rstd`.
pub fn grad_sums(g: &[f32], x: &[f32], c: usize, mean: &[f32], rstd: &[f32]) -> Vec<f32> {
    let m = x.len() / c.max(1);
    let s = column_sums(m, c, |r, ch| g[r * c + ch] as f64);
    let sx = column_sums(m, c, |r, ch| {
        let i = r * c + ch;
        g[i] as f64 * ((x[i] - mean[ch]) * rstd[ch]) as f64
    });
    let mut out: Vec<f32> = sx.iter().map(|&v| v as f32).collect();
    out.extend(s.iter().map(|&v| v as f32));
    out
}

/// Per-channel terms of the input gradient.
pub struct ChannelDx<'a> {
    /// `w · rstd / M`.
    pub k: &'a [f32],
    /// `Σ g`.
    pub s: &'a [f32],
    /// `Σ g·xhat`.
    pub sx: &'a [f32],
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
}

/// `dx = k · (M·g - Σg - xhat · Σ g·xhat)` per element.
pub fn dx(g: &[f32], x: &[f32], c: usize, m: f32, t: &ChannelDx) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    let block = ROWS * c.max(1);
    dx.par_chunks_mut(block)
        .zip(x.par_chunks(block).zip(g.par_chunks(block)))
        .for_each(|(dc, (xc, gc))| {
            for ((dr, xr), gr) in dc
                .chunks_exact_mut(c)
                .zip(xc.chunks_exact(c))
                .zip(gc.chunks_exact(c))
            {
                for ch in 0..c {
                    let xh = (xr[ch] - t.mean[ch]) * t.rstd[ch];
                    dr[ch] = t.k[ch] * (m * gr[ch] - t.s[ch] - xh * t.sx[ch]);
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition on [M, C] data laid out both ways (the NCHW statistics of the
    /// transposed data).
    #[test]
    fn statistics_are_per_column() {
        let (m, c) = (1000, 3);
        let x: Vec<f32> = (0..m * c)
            .map(|i| ((i * 31) % 17) as f32 * 0.25 + (i % c) as f32 * 10.0)
            .collect();
        let st = channel_stats(&x, c);
        for (ch, &(mean, var)) in st.iter().enumerate() {
            let col: Vec<f64> = (0..m).map(|r| x[r * c + ch] as f64).collect();
            let mu = col.iter().sum::<f64>() / m as f64;
            let v = col.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / m as f64;
            assert!(
                (mean - mu).abs() < 1e-9 && (var - v).abs() < 1e-9,
                "channel {ch}"
            );
        }
    }
}
