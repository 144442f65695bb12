//! Benchmark: what the MaxSup term adds to plain cross entropy, forward + backward.
//!
//! `cargo run --release -p maxsup-loss --example overhead [-- BATCH CLASSES ITERS]`
//! (defaults 256, 1000, 300). CE and MaxSup steps are interleaved so that load from other
//! processes affects both alike; the medians and their ratio are printed, along with candle-nn's
//! own composed cross entropy for context.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time_step(z: &Var, loss: impl Fn(&Tensor) -> Result<Tensor>) -> Result<f64> {
    let start = Instant::now();
    let l = loss(z.as_tensor())?;
    let grads = l.backward()?;
    std::hint::black_box(grads.get(z.as_tensor()));
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let (b, k, iters) = (
        *args.first().unwrap_or(&256),
        *args.get(1).unwrap_or(&1000),
        *args.get(2).unwrap_or(&300),
    );
    let device = Device::Cpu;
    let z = Var::from_tensor(&(Tensor::randn(0f32, 3f32, (b, k), &device)?))?;
    let y = Tensor::from_vec(
        (0..b as u32)
            .map(|i| (i * 7919) % k as u32)
            .collect::<Vec<_>>(),
        b,
        &device,
    )?;
    let (mut ce, mut ms, mut nn) = (vec![], vec![], vec![]);
    for i in 0..iters + 10 {
        let t_ce = time_step(&z, |z| maxsup_loss::cross_entropy(z, &y))?;
        let t_ms = time_step(&z, |z| maxsup_loss::maxsup(z, &y, 0.1))?;
        let t_nn = time_step(&z, |z| candle_nn::loss::cross_entropy(z, &y))?;
        if i >= 10 {
            ce.push(t_ce);
            ms.push(t_ms);
            nn.push(t_nn);
        }
    }
    let (ce, ms, nn) = (median(ce), median(ms), median(nn));
    println!(
        "batch={b} classes={k} iters={iters} threads={}",
        rayon::current_num_threads()
    );
    println!(
        "cross_entropy   median {:8.1} us (forward+backward)",
        ce * 1e6
    );
    println!("maxsup          median {:8.1} us", ms * 1e6);
    println!(
        "candle_nn ce    median {:8.1} us (candle-nn's composed cross entropy, for context)",
        nn * 1e6
    );
    println!("maxsup/ce ratio={:.4}", ms / ce);
    Ok(())
}
