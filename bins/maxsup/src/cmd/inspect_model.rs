//! `maxsup inspect-model`: build a registry model and print its parameter counts per top-level
//! module (numbers comparable with torchvision's / timm's `sum(p.numel())`).

use anyhow::Result;
use candle_core::Device;
use clap::Parser;
use maxsup_models::{create_model, model_names, model_summary, module_summary, ModelOptions};

#[derive(Parser, Debug)]
pub struct Args {
    /// Registry name (e.g. resnet50, resnet20_cifar, deit_small_patch16_224); omit to list all.
    pub model: Option<String>,
    /// Number of classes (default: 1000 for ImageNet models, 10 for CIFAR ones).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// DeiT input resolution (sets pos_embed).
    #[arg(long)]
    pub img_size: Option<usize>,
    /// FFCV BlurPool on strided convolutions (ResNets).
    #[arg(long)]
    pub blurpool: bool,
    /// List the registered models.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Some(name) = args.model.filter(|_| !args.list) else {
        for n in model_names() {
            println!("{n:<24} {}", model_summary(n).unwrap_or(""));
        }
        return Ok(());
    };
    let options = ModelOptions {
        num_classes: args.num_classes,
        img_size: args.img_size,
        blurpool: args.blurpool,
        ..Default::default()
    };
    let model = create_model(&name, &options, &Device::Cpu)?;
    println!(
        "{name}: {} ({} classes, {} features)",
        model_summary(&name).unwrap_or(""),
        model.num_classes(),
        model.num_features()
    );
    println!(
        "{:<14} {:>8} {:>14} {:>12}",
        "module", "tensors", "parameters", "buffers"
    );
    let rows = module_summary(model.params());
    for r in &rows {
        println!(
            "{:<14} {:>8} {:>14} {:>12}",
            r.module,
            r.tensors,
            thousands(r.trainable),
            thousands(r.buffers)
        );
    }
    let (t, p, b) = rows.iter().fold((0, 0, 0), |acc, r| {
        (acc.0 + r.tensors, acc.1 + r.trainable, acc.2 + r.buffers)
    });
    println!(
        "{:<14} {:>8} {:>14} {:>12}",
        "total",
        t,
        thousands(p),
        thousands(b)
    );
    Ok(())
}

/// 25557032 -> "25,557,032".
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
