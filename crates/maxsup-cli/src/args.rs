//! Command-line overrides of a recipe: every field of the configuration can be set.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use maxsup_loss::LossKind;
use maxsup_train::{DataSource, TrainConfig};

/// Options shared by `train-conv` and `train-vit`. Unset options keep the recipe's value.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Recipe preset to start from (see --list-recipes).
    #[arg(long)]
    pub recipe: Option<String>,
    /// List the recipe presets and exit.
    #[arg(long)]
    pub list_recipes: bool,
    /// Print the resolved configuration as JSON and exit without training.
    #[arg(long)]
    pub print_config: bool,
    /// Continue the run in --out-dir (or the given checkpoint) exactly where it stopped.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub resume: Option<String>,

    /// Model registry name (e.g. resnet20_cifar, resnet50, deit_small_patch16_224).
    #[arg(long)]
    pub model: Option<String>,
    /// CIFAR-10 binary batches directory.
    #[arg(long, value_name = "DIR")]
    pub cifar10: Option<PathBuf>,
    /// ImageFolder root with train/ and val/ class folders.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Directory with the official zip cache: train.zip, val.zip, train_map.txt, val_map.txt.
    #[arg(long, value_name = "DIR")]
    pub zip: Option<PathBuf>,
    /// Read the zip archives into memory (the official --cache).
    #[arg(long)]
    pub cache: bool,
    #[arg(long)]
    pub image_size: Option<usize>,

    /// Loss: ce, ls, maxsup, ols, zipf, lp, focal.
    #[arg(long)]
    pub loss: Option<LossKind>,
    /// Alpha of MaxSup/LS at the first epoch.
    #[arg(long)]
    pub alpha_start: Option<f64>,
    /// Alpha of MaxSup/LS at the last epoch.
    #[arg(long)]
    pub alpha_end: Option<f64>,
    #[arg(long)]
    pub lp_beta: Option<f64>,
    #[arg(long)]
    pub focal_gamma: Option<f64>,
    #[arg(long)]
    pub zipf_weight: Option<f64>,

    #[arg(long)]
    pub epochs: Option<usize>,
    /// Global batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Base learning rate (scaled by batch / reference batch where the recipe does so).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    #[arg(long)]
    pub min_lr: Option<f64>,
    #[arg(long)]
    pub drop_path: Option<f64>,
    /// BlurPool on strided convolutions (FFCV).
    #[arg(long)]
    pub blurpool: Option<bool>,
    /// Model EMA decay (0 turns EMA off).
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Clip gradients to this global norm (0 turns clipping off).
    #[arg(long)]
    pub clip_grad: Option<f64>,
    /// Mixup alpha (0 = off); MaxSup is then added to the soft-target loss.
    #[arg(long)]
    pub mixup: Option<f64>,
    /// CutMix alpha (0 = off).
    #[arg(long)]
    pub cutmix: Option<f64>,

    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Activation precision: f32, or bf16 mixed precision (f32 weights; CUDA only). Default:
    /// bf16 on CUDA, f32 on the CPU.
    #[arg(long)]
    pub precision: Option<String>,
    /// Run directory for checkpoints, config.json and log.jsonl.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Train on the first N samples only.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Evaluate on the first N samples only.
    #[arg(long)]
    pub eval_subset: Option<usize>,
    /// No progress bar (one line per epoch), e.g. for logs.
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainArgs {
    /// The recipe `default_recipe` (or --recipe) with every given option applied.
    pub fn resolve(&self, default_recipe: &str) -> Result<TrainConfig> {
        let recipe = self.recipe.as_deref().unwrap_or(default_recipe);
        let mut c = TrainConfig::preset(recipe)?;
        set(&mut c.model, self.model.clone());
        if let Some(dir) = &self.cifar10 {
            c.data = DataSource::Cifar10 { dir: dir.clone() };
        }
        if let Some(root) = &self.folder {
            c.data = DataSource::Folder { root: root.clone() };
        }
        if let Some(root) = &self.zip {
            c.data = DataSource::Zip {
                root: root.clone(),
                cache: self.cache,
            };
        }
        set(&mut c.image_size, self.image_size);
        set(&mut c.loss, self.loss);
        set(&mut c.alpha_start, self.alpha_start);
        set(&mut c.alpha_end, self.alpha_end);
        set(&mut c.lp_beta, self.lp_beta);
        set(&mut c.focal_gamma, self.focal_gamma);
        set(&mut c.zipf_weight, self.zipf_weight);
        set(&mut c.epochs, self.epochs);
        set(&mut c.batch_size, self.batch_size);
        set(&mut c.eval_batch_size, self.eval_batch_size);
        set(&mut c.lr, self.lr);
        set(&mut c.weight_decay, self.weight_decay);
        if let maxsup_train::ScheduleConfig::Cosine {
            warmup_epochs,
            min_lr,
            ..
        } = &mut c.schedule
        {
            set(warmup_epochs, self.warmup_epochs);
            set(min_lr, self.min_lr);
        }
        set(&mut c.drop_path, self.drop_path);
        set(&mut c.blurpool, self.blurpool);
        if let Some(decay) = self.ema_decay {
            c.ema_decay = (decay > 0.0).then_some(decay);
        }
        if let Some(norm) = self.clip_grad {
            c.clip_grad = (norm > 0.0).then_some(norm);
        }
        set(&mut c.augment.mixup, self.mixup);
        set(&mut c.augment.cutmix, self.cutmix);
        set(&mut c.seed, self.seed);
        set(&mut c.device, self.device.clone());
        c.precision = match &self.precision {
            Some(p) => maxsup_train::Precision::parse(p)?,
            None if self.device.is_some() => maxsup_train::Precision::default_for(&c.device),
            None => c.precision,
        };
        set(&mut c.out_dir, self.out_dir.clone());
        if self.train_subset.is_some() {
            c.train_subset = self.train_subset;
        }
        if self.eval_subset.is_some() {
            c.eval_subset = self.eval_subset;
        }
        c.validate()?;
        Ok(c)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}
