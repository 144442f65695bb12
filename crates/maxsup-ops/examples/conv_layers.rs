//! Times `conv2d` forward and forward + backward on the 3x3 layer shapes of the benchmark models
//! (ResNet-18/20/50 on 32 px, ResNet-18 on 224 px), median of a few runs each.
//!
//! `cargo run --release -p maxsup-ops --example conv_layers`; run it once more with
//! `MAXSUP_WINOGRAD=0` to compare the Winograd path with im2col + GEMM (`bench/conv_layers.sh`
//! does both and prints the ratios).

use candle_core::{Device, Result, Tensor, Var};
use std::time::Instant;

/// (batch, in channels, height = width, out channels), all 3x3 stride 1 padding 1.
const LAYERS: &[(usize, usize, usize, usize)] = &[
    (128, 16, 32, 16),
    (128, 32, 16, 32),
    (128, 64, 8, 64),
    (64, 64, 32, 64),
    (64, 128, 16, 128),
    (64, 256, 8, 256),
    (64, 512, 4, 512),
    (64, 128, 4, 128),
    (64, 256, 2, 256),
    (64, 512, 1, 512),
    (16, 64, 56, 64),
    (16, 128, 28, 128),
    (16, 256, 14, 256),
    (16, 512, 7, 512),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("n c hw o fwd_ms train_ms");
    for &(n, c, hw, o) in LAYERS {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, (o, c, 3, 3), &dev)?)?;
        let (mut fwd, mut train) = (Vec::new(), Vec::new());
        for _ in 0..reps + 1 {
            let t = Instant::now();
            let y = maxsup_ops::conv2d(x.as_tensor(), w.as_tensor(), None, 1, 1, 1, 1)?;
            fwd.push(t.elapsed().as_secs_f64());
            let grads = y.sum_all()?.backward()?;
            train.push(t.elapsed().as_secs_f64());
            drop(grads);
        }
        fwd.remove(0);
        train.remove(0);
        println!(
            "{n} {c} {hw} {o} {:.2} {:.2}",
            1e3 * median(fwd),
            1e3 * median(train)
        );
    }
    Ok(())
}
