//! Loader throughput and consumer stall on CIFAR-10 train (cifar-train pipeline), with a simulated
//! training step of STEP_MS per batch: `cargo run --release -p maxsup-data --example bench_loader --
//! [CIFAR_DIR] [BATCHES] [STEP_MS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use maxsup_data::{Cifar10, CifarSplit, Loader, LoaderConfig, Pipeline};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "data/cifar-10-batches-bin".into());
    let batches: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let step_ms: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let ds = Arc::new(Cifar10::open(&dir, CifarSplit::Train)?);
    let loader = Loader::new(ds, Pipeline::cifar_train(), LoaderConfig::train(128, 0))?;
    let start = Instant::now();
    let mut it = loader.epoch(0);
    for b in it.by_ref().take(batches) {
        b?;
        std::thread::sleep(Duration::from_millis(step_ms));
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "{batches} batches of 128 in {dt:.2} s ({:.0} img/s) with a {step_ms} ms step: stall {:.3} s ({:.1}% of the time)",
        (batches * 128) as f64 / dt,
        it.stall_time().as_secs_f64(),
        100.0 * it.stall_time().as_secs_f64() / dt
    );
    Ok(())
}
