//! Throughput of decode + RandomResizedCrop(224) + flip + normalize to f32 CHW, one thread, on JPEG
//! bytes held in memory: the same work as crates/maxsup-data/bench/torchvision_pipeline.py. The first
//! figure is the loader's path (`Pipeline::apply_encoded_into`: only the crop is decoded, at reduced
//! scale when it is shrunk 2x or more); the second decodes whole images first.
//!
//! `cargo run --release -p maxsup-data --example bench_decode -- DIR [N] [--crop-only]` (DIR holds
//! *.jpg files; `--crop-only` skips the second figure, e.g. to time the loader's path alone with
//! `perf stat`).
//! bench/vs_torchvision.sh runs this and the torchvision anchor in one go and prints the ratio.

use maxsup_data::decode_image as decode;
use maxsup_data::{Interpolation, Pipeline, Rng};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_decode DIR [N]"))?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(400);
    let crop_only = args.next().is_some_and(|a| a == "--crop-only");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.jpg in {dir}");
    let blobs: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let pipeline = Pipeline::imagenet_train(224, Interpolation::Bilinear);
    let mut out = vec![0f32; pipeline.sample_len()];
    let mut rng = Rng::from_seed(0);
    for b in blobs.iter().take(5) {
        pipeline.apply_encoded_into(b, &mut rng, &mut out)?;
    }
    // What the loader does: decode only the crop (maxsup-jpeg), resize, flip, normalize.
    let start = std::time::Instant::now();
    for i in 0..n {
        pipeline.apply_encoded_into(&blobs[i % blobs.len()], &mut rng, &mut out)?;
    }
    let dt = start.elapsed().as_secs_f64();
    let mean_kib =
        blobs.iter().map(|b| b.len()).sum::<usize>() as f64 / blobs.len() as f64 / 1024.0;
    if crop_only {
        println!(
            "maxsup-data: {:.1} img/s per core ({} JPEGs, mean {mean_kib:.0} KiB; crop decode)",
            n as f64 / dt,
            blobs.len()
        );
        return Ok(());
    }
    // For comparison: full decode (zune-jpeg), then the same transform.
    let (mut t_decode, start) = (std::time::Duration::ZERO, std::time::Instant::now());
    for i in 0..n {
        let t = std::time::Instant::now();
        let img = decode(&blobs[i % blobs.len()])?;
        t_decode += t.elapsed();
        pipeline.apply_into(&img, &mut rng, &mut out)?;
    }
    let dt_full = start.elapsed().as_secs_f64();
    println!(
        "maxsup-data: {:.1} img/s per core ({} JPEGs, mean {mean_kib:.0} KiB; crop decode); full decode then crop: {:.1} img/s (decode {:.0}% of it)",
        n as f64 / dt,
        blobs.len(),
        n as f64 / dt_full,
        100.0 * t_decode.as_secs_f64() / dt_full,
    );
    Ok(())
}
