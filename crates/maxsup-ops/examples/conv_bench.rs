//! Micro-benchmark of the conv2d custom op on ResNet shapes: forward, forward + weight gradient,
//! forward + both gradients (GFLOP/s), against candle's composed conv for the full step.
//! Run: `cargo run --release -p maxsup-ops --example conv_bench [-- --no-candle] [--cpu-time]`
//! (`--cpu-time` reports CPU seconds summed over threads, so GF/s are per core.)

use candle_core::{Device, Result, Tensor, Var};
use std::time::Instant;

/// CPU seconds (user + system, all threads) this process has used so far, from /proc/self/stat:
/// robust to other processes competing for the cores, unlike wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // fields 14 and 15 of the full line are utime, stime; `after` starts at field 3.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Median wall time of 3 runs after a warm-up, or CPU time per run when `cpu` (5 runs averaged).
fn time(f: &dyn Fn() -> Result<()>) -> Result<f64> {
    f()?;
    if std::env::args().any(|a| a == "--cpu-time") {
        let c0 = cpu_seconds();
        for _ in 0..5 {
            f()?;
        }
        return Ok((cpu_seconds() - c0) / 5.0);
    }
    let mut ts = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    Ok(ts[1])
}

fn main() -> Result<()> {
    let with_candle = !std::env::args().any(|a| a == "--no-candle");
    // (n, c, hw, o, k, stride, pad)
    let shapes = [
        (64, 64, 32, 64, 3, 1, 1),
        (64, 128, 16, 128, 3, 1, 1),
        (64, 256, 8, 256, 3, 1, 1),
        (64, 512, 4, 512, 3, 1, 1),
        (64, 256, 8, 1024, 1, 1, 0),
        (64, 3, 32, 64, 7, 2, 3),
    ];
    for (n, c, hw, o, k, s, p) in shapes {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, hw, hw), &Device::Cpu)?)?;
        let xc = x.as_tensor().detach();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (o, c, k, k), &Device::Cpu)?)?;
        let oh = (hw + 2 * p - k) / s + 1;
        let gf = 2.0 * (n * o * oh * oh * c * k * k) as f64 / 1e9;
        let conv = |x: &Tensor| maxsup_ops::conv2d(x, w.as_tensor(), None, s, p, 1, 1);
        let fwd = time(&|| conv(&xc).map(|_| ()))?;
        let dw = time(&|| conv(&xc)?.sum_all()?.backward().map(|_| ()))?;
        let both = time(&|| conv(x.as_tensor())?.sum_all()?.backward().map(|_| ()))?;
        let candle = if with_candle {
            let f = || -> Result<()> {
                let y =
                    maxsup_ops::reference::conv2d(x.as_tensor(), w.as_tensor(), None, s, p, 1, 1)?;
                y.sum_all()?.backward().map(|_| ())
            };
            format!("{:.4}s", time(&f)?)
        } else {
            "-".into()
        };
        println!(
            "n{n} c{c} {hw}x{hw} o{o} k{k} s{s}: fwd {fwd:.4}s {:.0} GF/s | dw {:.4}s {:.0} GF/s | dx {:.4}s {:.0} GF/s | step {both:.4}s, candle {candle}",
            gf / fwd,
            dw - fwd,
            gf / (dw - fwd),
            both - dw,
            gf / (both - dw),
        );
    }
    Ok(())
}
