//! Times the CPU convolution kernels alone (forward, and backward: input gradient where the
//! layer needs one, weight gradient) on every convolution shape of the benchmark models, on raw
//! slices without candle's graph. Prints `n c hw o k s dx fwd_ms bwd_ms`, medians of `REPS`
//! (default 5) after a warm-up; `bench/conv_kernels.sh` runs PyTorch on the same lines.
//!
//! Runs with the binaries' allocator setup (mimalloc keeping freed pages, `maxsup_cli::allocator`)
//! and thread setup (the caller a worker of rayon's pool): with the system allocator every large
//! scratch buffer page-faults on first touch, which made a 512-channel Winograd backward look 4x
//! slower than it runs inside training.
//!
//! `cargo run --release -p bench-train --bin conv-kernels [-- "64 512 4 512"]`: an argument keeps
//! the layers whose `n c hw o k s` line starts with it (for `perf record` on one layer).

use candle_core::{Device, Tensor};
use maxsup_ops::bench_hooks::{conv2d_backward, conv2d_forward, ConvShape};
use std::time::Instant;

/// (batch, in channels, height = width, out channels, kernel, stride, input gradient): padding
/// kernel / 2. ResNet-20 b128, ResNet-18 (CIFAR stem) b64, ResNet-50 b64 at 32 px, ResNet-18 b16
/// at 224 px; the first layer of each takes no input gradient (its input is the image).
const LAYERS: &[(usize, usize, usize, usize, usize, usize, bool)] = &[
    // ResNet-20, batch 128, 32 px
    (128, 3, 32, 16, 3, 1, false),
    (128, 16, 32, 16, 3, 1, true),
    (128, 16, 32, 32, 3, 2, true),
    (128, 32, 16, 32, 3, 1, true),
    (128, 32, 16, 64, 3, 2, true),
    (128, 64, 8, 64, 3, 1, true),
    // ResNet-18 with the CIFAR stem, batch 64, 32 px
    (64, 3, 32, 64, 3, 1, false),
    (64, 64, 32, 64, 3, 1, true),
    (64, 64, 32, 128, 3, 2, true),
    (64, 64, 32, 128, 1, 2, true),
    (64, 128, 16, 128, 3, 1, true),
    (64, 128, 16, 256, 3, 2, true),
    (64, 256, 8, 256, 3, 1, true),
    (64, 256, 8, 512, 3, 2, true),
    (64, 512, 4, 512, 3, 1, true),
    // ResNet-50, batch 64, 32 px (stem to 16 px, pool to 8 px)
    (64, 3, 32, 64, 7, 2, false),
    (64, 64, 8, 64, 1, 1, true),
    (64, 64, 8, 64, 3, 1, true),
    (64, 64, 8, 256, 1, 1, true),
    (64, 256, 8, 64, 1, 1, true),
    (64, 256, 8, 128, 1, 1, true),
    (64, 128, 8, 128, 3, 2, true),
    (64, 128, 4, 512, 1, 1, true),
    (64, 256, 8, 512, 1, 2, true),
    (64, 512, 4, 128, 1, 1, true),
    (64, 128, 4, 128, 3, 1, true),
    (64, 512, 4, 256, 1, 1, true),
    (64, 256, 4, 256, 3, 2, true),
    (64, 256, 2, 1024, 1, 1, true),
    (64, 512, 4, 1024, 1, 2, true),
    (64, 1024, 2, 256, 1, 1, true),
    (64, 256, 2, 256, 3, 1, true),
    (64, 1024, 2, 512, 1, 1, true),
    (64, 512, 2, 512, 3, 2, true),
    (64, 512, 1, 2048, 1, 1, true),
    (64, 1024, 2, 2048, 1, 2, true),
    (64, 2048, 1, 512, 1, 1, true),
    (64, 512, 1, 512, 3, 1, true),
    // ResNet-18, batch 16, 224 px
    (16, 3, 224, 64, 7, 2, false),
    (16, 64, 56, 64, 3, 1, true),
    (16, 64, 56, 128, 3, 2, true),
    (16, 64, 56, 128, 1, 2, true),
    (16, 128, 28, 128, 3, 1, true),
    (16, 128, 28, 256, 3, 2, true),
    (16, 128, 28, 256, 1, 2, true),
    (16, 256, 14, 256, 3, 1, true),
    (16, 256, 14, 512, 3, 2, true),
    (16, 256, 14, 512, 1, 2, true),
    (16, 512, 7, 512, 3, 1, true),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Normal values times `scale` (the kernels' speed does not depend on them).
fn values(len: usize, scale: f32) -> candle_core::Result<Vec<f32>> {
    Tensor::randn(0f32, scale, len, &Device::Cpu)?.to_vec1()
}

fn main() -> anyhow::Result<()> {
    maxsup_cli::cpu_threads::candle_ops_on_calling_thread();
    anyhow::ensure!(
        maxsup_cli::allocator::retain_freed_pages(),
        "could not set mimalloc's purge delay"
    );
    maxsup_cli::cpu_threads::join_rayon_pool(None)?;
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let only = std::env::args().nth(1).unwrap_or_default();
    println!("n c hw o k s dx fwd_ms bwd_ms");
    for &(n, c, hw, o, k, stride, want_dx) in LAYERS {
        if !format!("{n} {c} {hw} {o} {k} {stride}").starts_with(only.as_str()) {
            continue;
        }
        let s = ConvShape {
            n,
            c,
            hw,
            o,
            k,
            stride,
        };
        let x = values(n * c * hw * hw, 1.0)?;
        let w = values(o * c * k * k, 0.05)?;
        let dy = values(s.output_len()?, 1.0)?;
        let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
        for _ in 0..reps + 1 {
            let t = Instant::now();
            let y = conv2d_forward(s, &x, &w)?;
            fwd.push(t.elapsed().as_secs_f64());
            drop(y);
            let t = Instant::now();
            let grads = conv2d_backward(s, &x, &w, &dy, want_dx)?;
            bwd.push(t.elapsed().as_secs_f64());
            drop(grads);
        }
        fwd.remove(0);
        bwd.remove(0);
        println!(
            "{n} {c} {hw} {o} {k} {stride} {} {:.2} {:.2}",
            u8::from(want_dx),
            1e3 * median(fwd),
            1e3 * median(bwd)
        );
    }
    Ok(())
}
