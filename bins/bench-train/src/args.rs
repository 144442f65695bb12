//! Command-line options of `bench-train`.

use clap::Parser;

/// Time N training steps of a registry model on a fixed random batch (f32, CPU) and report the
/// median step time and the peak resident memory, in the same shape as
/// bench/torch_steps.py (SGD lr 0.1, momentum 0.9, weight decay 1e-4 by default, or AdamW,
/// MaxSup alpha 0.1; the first step is a warm-up and excluded from the median).
#[derive(Parser, Debug)]
#[command(name = "bench-train")]
pub struct Args {
    /// Registry model name (e.g. resnet18_cifar, resnet50, resnet20_cifar, deit_small_patch4_32).
    #[arg(long)]
    pub model: String,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed steps, the warm-up step included.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Square input resolution.
    #[arg(long, default_value_t = 32)]
    pub img: usize,
    /// Number of classes (logits).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// MaxSup coefficient of the loss.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Worker threads (rayon pool used by candle and maxsup-ops); default: RAYON_NUM_THREADS or all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Optimizer: `sgd` (lr 0.1, --momentum, --weight-decay) or `adamw` (lr 1e-3, betas
    /// (0.9, 0.999), eps 1e-8, --weight-decay as AdamW's decoupled decay), as DeiT trains.
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adamw"])]
    pub optimizer: String,
    /// SGD momentum (maxsup-optim's Sgd, PyTorch semantics).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// SGD L2 weight decay (added to the gradient, PyTorch semantics).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Seed of the weights and the random batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}
