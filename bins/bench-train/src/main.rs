//! `bench-train`: median training-step time and peak memory of a registry model on CPU.
//!
//! Example: `cargo run --release -p bench-train -- --model resnet18_cifar --batch 64 --steps 5`
//! prints per-step times, then `median_step_s=<s>` and `peak_rss_mb=<MiB>`.
//! bench/compare_torch.sh runs it next to the PyTorch anchor and prints the ratio.

mod args;
mod memory;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use maxsup_models::{create_model, ModelOptions};
use maxsup_optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use std::time::Instant;

fn main() -> Result<()> {
    maxsup_cli::cpu_threads::candle_ops_on_calling_thread();
    if !maxsup_cli::allocator::retain_freed_pages() {
        eprintln!("warning: could not set mimalloc's purge delay; timings include page faults");
    }
    let args = args::Args::parse();
    if args.steps < 2 {
        bail!("--steps must be at least 2 (the first step is a warm-up)");
    }
    maxsup_cli::cpu_threads::join_rayon_pool(args.threads)?;
    let dev = Device::Cpu;
    let options = ModelOptions {
        num_classes: Some(args.classes),
        seed: args.seed,
        ..ModelOptions::default()
    };
    let model = create_model(&args.model, &options, &dev)
        .with_context(|| format!("building {}", args.model))?;
    let params: Vec<(String, candle_core::Var)> = model
        .params()
        .trainable()
        .map(|e| (e.name.clone(), e.var.clone()))
        .collect();
    let groups = vec![ParamGroup::new(params, args.weight_decay)];
    let mut opt: Box<dyn Optimizer> = match args.optimizer.as_str() {
        "adamw" => Box::new(AdamW::new(groups, AdamWConfig::default())?),
        _ => Box::new(Sgd::new(
            groups,
            SgdConfig {
                lr: 0.1,
                momentum: args.momentum,
                nesterov: false,
            },
        )?),
    };

    let x = Tensor::randn(0f32, 1.0, (args.batch, 3, args.img, args.img), &dev)?;
    let y = Tensor::rand(0f32, args.classes as f32, args.batch, &dev)?
        .floor()?
        .to_dtype(DType::U32)?;
    let y = y.clamp(0u32, args.classes as u32 - 1)?;

    let mut times = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let t = Instant::now();
        let logits = model.forward_t(&x, true)?;
        let loss = maxsup_loss::maxsup(&logits, &y, args.alpha)?;
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let t_bwd = t.elapsed().as_secs_f64();
        opt.step(&grads)?;
        drop(grads);
        let dt = t.elapsed().as_secs_f64();
        let loss = loss.to_scalar::<f32>()?;
        println!(
            "step {step}: {dt:.3}s (forward+loss {t_fwd:.3}s, backward {:.3}s, optimizer {:.3}s) loss {loss:.4} rss {:.0} MiB",
            t_bwd - t_fwd,
            dt - t_bwd,
            memory::rss_mb()?
        );
        times.push(dt);
    }
    let mut timed = times[1..].to_vec();
    timed.sort_by(|a, b| a.total_cmp(b));
    let median = timed[timed.len() / 2];
    println!(
        "model={} batch={} img={} threads={} steps={}",
        args.model,
        args.batch,
        args.img,
        rayon::current_num_threads(),
        args.steps
    );
    println!("median_step_s={median:.4}");
    println!("peak_rss_mb={:.1}", memory::peak_rss_mb()?);
    Ok(())
}
