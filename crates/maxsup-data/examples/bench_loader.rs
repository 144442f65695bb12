//! Loader throughput and consumer stall with a simulated training step of STEP_MS per batch, all
//! cores decoding:
//! - CIFAR-10 train, cifar-train pipeline, batch 128:
//!   `cargo run --release -p maxsup-data --example bench_loader -- [CIFAR_DIR] [BATCHES] [STEP_MS]`
//! - an ImageFolder of JPEGs, imagenet-train pipeline (crop-only JPEG decoding), batch 64:
//!   `cargo run --release -p maxsup-data --example bench_loader -- --folder DIR [BATCHES] [STEP_MS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use maxsup_data::{
    Cifar10, CifarSplit, Dataset, ImageFolder, Interpolation, Loader, LoaderConfig, Pipeline,
};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let folder = if args.first().is_some_and(|a| a == "--folder") {
        args.remove(0);
        Some(args.remove(0))
    } else {
        None
    };
    let mut args = args.into_iter();
    let (ds, pipeline, batch): (Arc<dyn Dataset>, Pipeline, usize) = match folder {
        Some(dir) => (
            Arc::new(ImageFolder::open(std::path::Path::new(&dir))?),
            Pipeline::imagenet_train(224, Interpolation::Bilinear),
            64,
        ),
        None => {
            let dir = args
                .next()
                .unwrap_or_else(|| "data/cifar-10-batches-bin".into());
            (
                Arc::new(Cifar10::open(&dir, CifarSplit::Train)?),
                Pipeline::cifar_train(),
                128,
            )
        }
    };
    let batches: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let step_ms: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let n = ds.len();
    let loader = Loader::new(ds, pipeline, LoaderConfig::train(batch, 0))?;
    let start = Instant::now();
    let mut done = 0;
    let mut stall = Duration::ZERO;
    let mut epoch = 0;
    while done < batches {
        let mut it = loader.epoch(epoch);
        for b in it.by_ref().take(batches - done) {
            b?;
            done += 1;
            std::thread::sleep(Duration::from_millis(step_ms));
        }
        stall += it.stall_time();
        epoch += 1;
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "{batches} batches of {batch} ({n} samples, {epoch} epochs) in {dt:.2} s ({:.0} img/s) with a {step_ms} ms step: stall {:.3} s ({:.1}% of the time)",
        (batches * batch) as f64 / dt,
        stall.as_secs_f64(),
        100.0 * stall.as_secs_f64() / dt
    );
    Ok(())
}
