//! `gpu-check PHASE --out FILE`: the checks of `just gpu-check` that run in our code, one phase
//! per call so that a phase cut off by its time limit loses nothing already written.
//!
//! Phases: `env` (device, driver, cuDNN, kernel load time), `ops` (every op on CUDA against the
//! composed CPU reference in f64, forward and backward, f32 and bf16), `host-side` (batches
//! through page-locked staging buffers, 8-bit pixels normalized on the GPU, losses with labels
//! on the host), `grads` (every trainable
//! parameter of ResNet-50 and DeiT-S gets a finite gradient on CUDA), `steps` (one SGD step on
//! CPU and GPU agree; a bf16 run overfits one batch, tracking an f32 run's loss curve; the
//! default CIFAR-10 run's time, estimated), `throughput` (ResNet-50 and DeiT-S
//! training steps at 224 px), `dist` (NCCL with one rank, the all-reduce cost of the flat gradient
//! buffers, `train-conv --gpus 1` against a plain CUDA run). `scripts/gpu-check.sh` runs them with PyTorch's side and writes
//! the report.

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod compare;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod default_run;
#[cfg(feature = "cuda")]
mod dist;
#[cfg(feature = "cuda")]
mod env;
#[cfg(feature = "cuda")]
mod host_side;
#[cfg(feature = "cuda")]
mod models;
#[cfg(feature = "cuda")]
mod ops;
#[cfg(feature = "cuda")]
mod optim;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod rows;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod short_runs;
#[cfg(feature = "cuda")]
mod throughput;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod train_conv;

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Phase {
    Env,
    Ops,
    HostSide,
    Grads,
    Steps,
    Throughput,
    Dist,
}

#[derive(Parser, Debug)]
#[command(about = "GPU checks of maxsup-rs (needs a build with --features cuda and a GPU)")]
struct Args {
    phase: Phase,
    /// Where the phase's JSON goes.
    #[arg(long)]
    out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// Training steps timed per model (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps before the timed ones.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Batch size of the throughput phase.
    #[arg(long, default_value_t = 256)]
    batch: usize,
}

#[cfg(feature = "cuda")]
fn main() -> anyhow::Result<()> {
    use anyhow::Context;
    let args = Args::parse();
    let device = candle_core::Device::new_cuda(args.gpu)
        .with_context(|| format!("cannot open CUDA device {}", args.gpu))?;
    if let candle_core::Device::Cuda(d) = &device {
        maxsup_ops::configure_device(d)?;
    }
    let value = match args.phase {
        Phase::Env => env::run(&device)?,
        Phase::Ops => ops::run(&device, &args.out)?,
        Phase::HostSide => host_side::run(&device)?,
        Phase::Grads => models::grads(&device)?,
        Phase::Steps => models::steps(&device, args.gpu)?,
        Phase::Throughput => {
            throughput::run(&device, (args.batch, args.warmup, args.steps), &args.out)?
        }
        Phase::Dist => dist::run(&device, args.gpu)?,
    };
    let text = serde_json::to_string_pretty(&value)?;
    std::fs::write(&args.out, text + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    let failed = value
        .get("pass")
        .and_then(|p| p.as_bool())
        .map(|p| !p)
        .unwrap_or(false);
    eprintln!(
        "gpu-check {:?}: {} -> {}",
        args.phase,
        if failed { "FAIL" } else { "done" },
        args.out.display()
    );
    std::process::exit(if failed { 1 } else { 0 })
}

#[cfg(not(feature = "cuda"))]
fn main() {
    let _ = Args::parse();
    eprintln!("gpu-check: this binary was built without CUDA; build it with `just build-cuda` (docs/cuda.md)");
    std::process::exit(2);
}
