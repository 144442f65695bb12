//! Command-line overrides of a recipe: every field of the configuration can be set.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use maxsup_loss::LossKind;
use maxsup_train::TrainConfig;

use crate::DatasetArgs;

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
    #[command(flatten)]
    pub data: DatasetArgs,

    /// Loss: ce, ls, maxsup, ols, zipf, lp, focal.
    #[arg(long)]
    pub loss: Option<LossKind>,
    /// Alpha of MaxSup/LS at the first epoch.
    #[arg(long)]
    pub alpha_start: Option<f64>,
    /// Alpha of MaxSup/LS at the last epoch.
    #[arg(long)]
    pub alpha_end: Option<f64>,
    /// Logit-penalty weight beta (`--loss lp`).
    #[arg(long)]
    pub lp_beta: Option<f64>,
    /// Focal-loss gamma (`--loss focal`).
    #[arg(long)]
    pub focal_gamma: Option<f64>,
    /// Weight of Zipf-LS's KL term (`--loss zipf`).
    #[arg(long)]
    pub zipf_weight: Option<f64>,

    /// Training epochs (with --resume: train on to this many).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Global batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Batch size of the evaluation after each epoch.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Base learning rate (scaled by batch / reference batch where the recipe does so).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay (not applied to norms, biases and the recipe's no-decay set).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Linear warm-up epochs of the cosine schedule.
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Final learning rate of the cosine schedule.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Stochastic-depth rate of the last DeiT block (linear from 0; ResNets take 0).
    #[arg(long)]
    pub drop_path: Option<f64>,
    /// BlurPool on strided convolutions (FFCV).
    #[arg(long)]
    pub blurpool: Option<bool>,
    /// SyncBatchNorm in a data-parallel run: BatchNorm statistics over the whole global batch
    /// (`--sync-bn true|false`; the resnet50-imagenet recipe has it on, as the authors' runs).
    #[arg(long)]
    pub sync_bn: Option<bool>,
    /// Channels-last (NHWC) activations, as PyTorch's `channels_last` (`--channels-last
    /// true|false`; ResNets): cuDNN's tensor-core convolutions run on NHWC data without a
    /// transpose around each call. Off by default until the GPU check has measured it; on the
    /// CPU it runs, slower (its NHWC kernels are simple loops, there for the tests).
    #[arg(long)]
    pub channels_last: Option<bool>,
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

    /// Seed of the weight initialisation, data order and augmentations.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Activation precision: f32, or bf16 mixed precision (f32 weights; CUDA only). Default:
    /// bf16 on CUDA, f32 on the CPU.
    #[arg(long)]
    pub precision: Option<String>,
    /// Choose each convolution's cuDNN algorithms by timing them at the first step
    /// (`--cudnn-benchmark true`, PyTorch's `cudnn.benchmark`) instead of by cuDNN's heuristic
    /// (the default). CUDA only.
    #[arg(long)]
    pub cudnn_benchmark: Option<bool>,
    /// DeiT's attention as one tensor-core kernel forward and one backward (`--fused-attention
    /// true`: the scores and their gradients stay in shared memory) instead of batched GEMMs
    /// around the softmax and its backward. CUDA with bf16 only; off by default until the GPU
    /// check has measured it.
    #[arg(long)]
    pub fused_attention: Option<bool>,
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
    /// Data-parallel training in N processes on this machine (CPU; the cores are divided among
    /// them). --batch-size stays the global batch. Under torchrun or SLURM leave it out: the
    /// launcher's variables say the rank and world size (docs/distributed.md).
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// Data-parallel training on N GPUs of this machine over NCCL, one process per GPU (implies
    /// --device cuda; --batch-size stays the global batch). `--gpus 1` runs one process through
    /// the same data-parallel path. Under torchrun or SLURM leave it out and give --device cuda.
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
}

impl TrainArgs {
    /// The recipe `default_recipe` (or --recipe) with every given option applied.
    pub fn resolve(&self, default_recipe: &str) -> Result<TrainConfig> {
        let recipe = self.recipe.as_deref().unwrap_or(default_recipe);
        let mut c = TrainConfig::preset(recipe)?;
        self.check_flags(&c)?;
        self.apply(&mut c)?;
        c.validate()?;
        self.check_applicable(&c)?;
        Ok(c)
    }

    /// The configuration of a run being resumed (`saved`, from its checkpoint) with the options
    /// that may change mid-run applied: epochs (train longer), learning rate, batch sizes,
    /// schedule knobs, alpha, regularisation strengths, Mixup/CutMix, clipping, device,
    /// precision, output directory, evaluation subset. Options that define the run itself
    /// (recipe, model, data, image size, loss, seed, BlurPool, drop path, EMA, training subset)
    /// are refused when they differ from the saved run, naming the flag.
    pub fn resolve_resumed(
        &self,
        saved: &TrainConfig,
        completed_epochs: usize,
    ) -> Result<TrainConfig> {
        if let Some(r) = &self.recipe {
            if r != &saved.recipe {
                bail!(
                    "--recipe {r} does not apply to --resume: the run being resumed uses recipe `{}` \
                     (start a new run with another --out-dir to change it)",
                    saved.recipe
                );
            }
        }
        self.check_flags(saved)?;
        let mut c = saved.clone();
        self.apply(&mut c)?;
        let fixed: [(&str, bool); 10] = [
            ("--model", c.model != saved.model),
            (
                "--cifar10/--fashion-mnist/--folder/--zip/--cache",
                c.input.source != saved.input.source,
            ),
            ("--image-size", c.input.image_size != saved.input.image_size),
            ("--loss", c.loss != saved.loss),
            ("--seed", c.seed != saved.seed),
            ("--blurpool", c.blurpool != saved.blurpool),
            ("--drop-path", c.drop_path != saved.drop_path),
            ("--ema-decay", c.ema_decay != saved.ema_decay),
            ("--train-subset", c.train_subset != saved.train_subset),
            (
                "--zipf-weight",
                c.zipf_weight != saved.zipf_weight && c.loss == LossKind::Zipf,
            ),
        ];
        if let Some((flag, _)) = fixed.iter().find(|(_, changed)| *changed) {
            bail!(
                "{flag} does not apply to --resume: it defines the run being resumed (model `{}`, \
                 loss {}); start a new run with another --out-dir to change it",
                saved.model,
                saved.loss
            );
        }
        if c.epochs <= completed_epochs {
            bail!(
                "--epochs {}: the run being resumed has already completed {completed_epochs} epochs \
                 (give more to train longer)",
                c.epochs
            );
        }
        c.validate()?;
        self.check_applicable(&c)?;
        Ok(c)
    }

    /// Errors for options the resolved run does not use: a loss's own strength given with
    /// another loss, stochastic depth for a ResNet, BlurPool for a DeiT.
    fn check_applicable(&self, c: &TrainConfig) -> Result<()> {
        use maxsup_models::ModelFamily;
        let family = maxsup_models::model_family(&c.model);
        let uses_alpha = matches!(c.loss, LossKind::Ls | LossKind::Maxsup);
        let checks: [(&str, bool, bool, String); 13] = [
            (
                "--alpha-start",
                self.alpha_start.is_some(),
                uses_alpha,
                format!("loss {}", c.loss),
            ),
            (
                "--alpha-end",
                self.alpha_end.is_some(),
                uses_alpha,
                format!("loss {}", c.loss),
            ),
            (
                "--lp-beta",
                self.lp_beta.is_some(),
                c.loss == LossKind::Lp,
                format!("loss {}", c.loss),
            ),
            (
                "--focal-gamma",
                self.focal_gamma.is_some(),
                c.loss == LossKind::Focal,
                format!("loss {}", c.loss),
            ),
            (
                "--zipf-weight",
                self.zipf_weight.is_some(),
                c.loss == LossKind::Zipf,
                format!("loss {}", c.loss),
            ),
            (
                "--drop-path",
                self.drop_path.is_some_and(|d| d != 0.0),
                family == Some(ModelFamily::DeiT),
                format!("model `{}` (stochastic depth is a DeiT option)", c.model),
            ),
            (
                "--blurpool",
                self.blurpool == Some(true),
                family == Some(ModelFamily::ResNet),
                format!("model `{}` (BlurPool is a ResNet option)", c.model),
            ),
            (
                "--sync-bn",
                self.sync_bn == Some(true),
                family == Some(ModelFamily::ResNet),
                format!("model `{}` (it has no BatchNorm)", c.model),
            ),
            (
                "--cudnn-benchmark",
                self.cudnn_benchmark == Some(true),
                c.device.starts_with("cuda"),
                format!("--device {} (it times cuDNN's convolutions)", c.device),
            ),
            (
                "--fused-attention",
                self.fused_attention == Some(true),
                family == Some(ModelFamily::DeiT),
                format!("model `{}` (it has no attention)", c.model),
            ),
            (
                "--fused-attention",
                self.fused_attention == Some(true),
                c.device.starts_with("cuda"),
                format!("--device {} (a CUDA kernel)", c.device),
            ),
            (
                "--fused-attention",
                self.fused_attention == Some(true),
                c.precision == maxsup_train::Precision::Bf16,
                format!("--precision {} (a bf16 kernel)", c.precision),
            ),
            (
                "--channels-last",
                self.channels_last == Some(true),
                family == Some(ModelFamily::ResNet),
                format!(
                    "model `{}` (a ResNet option: a DeiT's one convolution is its patch embedding)",
                    c.model
                ),
            ),
        ];
        if let Some((flag, _, _, what)) = checks
            .iter()
            .find(|(_, given, applies, _)| *given && !applies)
        {
            bail!("{flag} does not apply to {what}");
        }
        Ok(())
    }

    /// Errors for options that would be dropped silently: schedule knobs the recipe's schedule
    /// does not have (the dataset flags check themselves in [`DatasetArgs::apply`]).
    fn check_flags(&self, c: &TrainConfig) -> Result<()> {
        let cosine = matches!(c.schedule, maxsup_train::ScheduleConfig::Cosine { .. });
        for (flag, given) in [
            ("--warmup-epochs", self.warmup_epochs.is_some()),
            ("--min-lr", self.min_lr.is_some()),
        ] {
            if given && !cosine {
                bail!(
                    "{flag} applies to the cosine schedule; recipe `{}` uses {:?}",
                    c.recipe,
                    c.schedule
                );
            }
        }
        Ok(())
    }

    /// Every given option written into `c`.
    fn apply(&self, c: &mut TrainConfig) -> Result<()> {
        set(&mut c.model, self.model.clone());
        self.data
            .apply(&mut c.input.source, &mut c.input.image_size)?;
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
        set(&mut c.sync_bn, self.sync_bn);
        set(&mut c.channels_last, self.channels_last);
        if let Some(decay) = self.ema_decay {
            c.ema_decay = (decay != 0.0).then_some(decay);
        }
        if let Some(norm) = self.clip_grad {
            c.clip_grad = (norm != 0.0).then_some(norm);
        }
        set(&mut c.input.augment.mixup, self.mixup);
        set(&mut c.input.augment.cutmix, self.cutmix);
        set(&mut c.seed, self.seed);
        let device = self.device_flag()?;
        let was_cuda = c.device.starts_with("cuda");
        set(&mut c.device, device.clone());
        c.precision = match &self.precision {
            Some(p) => maxsup_train::Precision::parse(p)?,
            // The device's default where the kind of device changes (a new run from a CPU
            // recipe, a resumed run moved between CPU and CUDA); otherwise as it was, so a
            // resumed f32 CUDA run named with its own device stays f32.
            None if device.is_some() && was_cuda != c.device.starts_with("cuda") => {
                maxsup_train::Precision::default_for(&c.device)
            }
            None => c.precision,
        };
        set(&mut c.cudnn_benchmark, self.cudnn_benchmark);
        set(&mut c.fused_attention, self.fused_attention);
        set(&mut c.out_dir, self.out_dir.clone());
        if self.train_subset.is_some() {
            c.train_subset = self.train_subset;
        }
        if self.eval_subset.is_some() {
            c.eval_subset = self.eval_subset;
        }
        Ok(())
    }
}

impl TrainArgs {
    /// `--device`, or `cuda` when `--gpus` is given without it; `--gpus` with a CPU device is
    /// an error.
    pub fn device_flag(&self) -> Result<Option<String>> {
        match (&self.device, self.gpus) {
            (Some(d), Some(n)) if maxsup_train::DeviceSpec::parse(d)?.is_cpu() => bail!(
                "--device {d} does not apply to --gpus {n}, which trains on GPUs (CPU processes: \
                 --nproc)"
            ),
            (None, Some(_)) => Ok(Some("cuda".into())),
            (d, _) => Ok(d.clone()),
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn args(flags: &[&str]) -> TrainArgs {
        let mut argv = vec!["train-conv"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    fn err(r: Result<TrainConfig>) -> String {
        format!("{:#}", r.expect_err("should be refused"))
    }

    #[test]
    fn given_options_override_the_recipe() {
        let c = args(&[
            "--epochs",
            "3",
            "--lr",
            "0.05",
            "--loss",
            "ls",
            "--out-dir",
            "x",
        ])
        .resolve("cifar10-resnet20")
        .unwrap();
        assert_eq!((c.epochs, c.lr, c.loss), (3, 0.05, LossKind::Ls));
        assert_eq!(c.out_dir, PathBuf::from("x"));
        assert_eq!(c.precision, maxsup_train::Precision::F32);
        let gpu = args(&["--device", "cuda"])
            .resolve("cifar10-resnet20")
            .unwrap();
        assert_eq!(
            gpu.precision,
            maxsup_train::Precision::Bf16,
            "bf16 is the CUDA default"
        );
        let f32_gpu = args(&["--device", "cuda", "--precision", "f32"])
            .resolve("cifar10-resnet20")
            .unwrap();
        assert_eq!(f32_gpu.precision, maxsup_train::Precision::F32);
        let gpus = args(&["--gpus", "2"]).resolve("cifar10-resnet20").unwrap();
        assert_eq!(
            (gpus.device.as_str(), gpus.precision),
            ("cuda", maxsup_train::Precision::Bf16),
            "--gpus implies --device cuda"
        );
        let e = err(args(&["--gpus", "2", "--device", "cpu"]).resolve("cifar10-resnet20"));
        assert!(e.contains("--device cpu does not apply to --gpus 2"), "{e}");
    }

    #[test]
    fn fused_attention_is_a_cuda_deit_option() {
        let on = ["--device", "cuda", "--fused-attention", "true"];
        assert!(
            args(&on)
                .resolve("cifar10-deit-tiny")
                .unwrap()
                .fused_attention
        );
        assert!(
            !args(&[])
                .resolve("cifar10-deit-tiny")
                .unwrap()
                .fused_attention
        );
        let e = err(args(&on).resolve("cifar10-resnet20"));
        assert!(
            e.contains("--fused-attention does not apply to model"),
            "{e}"
        );
        let e = err(args(&["--fused-attention", "true"]).resolve("cifar10-deit-tiny"));
        assert!(
            e.contains("--fused-attention does not apply to --device cpu"),
            "{e}"
        );
        let mut f32_on = on.to_vec();
        f32_on.extend(["--precision", "f32"]);
        let e = err(args(&f32_on).resolve("cifar10-deit-tiny"));
        assert!(
            e.contains("--fused-attention does not apply to --precision f32"),
            "{e}"
        );
    }

    #[test]
    fn a_resumed_run_keeps_its_precision_unless_the_kind_of_device_changes() {
        use maxsup_train::Precision::{Bf16, F32};
        let f32_gpu = args(&["--device", "cuda", "--precision", "f32", "--epochs", "4"])
            .resolve("cifar10-resnet20")
            .unwrap();
        for same_device in [
            &["--device", "cuda"][..],
            &["--device", "cuda:1"],
            &["--gpus", "1"],
        ] {
            let c = args(same_device).resolve_resumed(&f32_gpu, 2).unwrap();
            assert_eq!(c.precision, F32, "{same_device:?}: an f32 run stays f32");
        }
        let moved = args(&["--device", "cpu"])
            .resolve_resumed(&f32_gpu, 2)
            .unwrap();
        assert_eq!(moved.precision, F32);
        let bf16_gpu = args(&["--device", "cuda", "--epochs", "4"])
            .resolve("cifar10-resnet20")
            .unwrap();
        assert_eq!(bf16_gpu.precision, Bf16);
        let c = args(&["--device", "cuda:0"])
            .resolve_resumed(&bf16_gpu, 2)
            .unwrap();
        assert_eq!(c.precision, Bf16);
        let to_cpu = args(&["--device", "cpu"])
            .resolve_resumed(&bf16_gpu, 2)
            .unwrap();
        assert_eq!(to_cpu.precision, F32, "bf16 does not run on the CPU");
        let cpu_run = args(&["--epochs", "4"])
            .resolve("cifar10-resnet20")
            .unwrap();
        let to_gpu = args(&["--device", "cuda"])
            .resolve_resumed(&cpu_run, 2)
            .unwrap();
        assert_eq!(
            to_gpu.precision, Bf16,
            "CUDA's default for a run moved there"
        );
    }

    #[test]
    fn cudnn_benchmark_is_a_cuda_option() {
        let c = args(&["--device", "cuda:1", "--cudnn-benchmark", "true"])
            .resolve("cifar10-resnet20")
            .unwrap();
        assert!(c.cudnn_benchmark);
        assert!(
            !args(&[])
                .resolve("cifar10-resnet20")
                .unwrap()
                .cudnn_benchmark
        );
        let e = err(args(&["--cudnn-benchmark", "true"]).resolve("cifar10-resnet20"));
        assert!(
            e.contains("--cudnn-benchmark does not apply to --device cpu"),
            "{e}"
        );
    }

    #[test]
    fn options_that_would_be_dropped_are_errors() {
        let e = err(args(&["--warmup-epochs", "2"]).resolve("cifar100-resnet18"));
        assert!(
            e.contains("--warmup-epochs applies to the cosine schedule"),
            "{e}"
        );
        let e = err(args(&["--min-lr", "0"]).resolve("resnet50-imagenet-step"));
        assert!(e.contains("--min-lr"), "{e}");
        let e = err(args(&["--sync-bn", "true"]).resolve("cifar10-deit-tiny"));
        assert!(
            e.contains("--sync-bn does not apply") && e.contains("no BatchNorm"),
            "{e}"
        );
        assert!(
            args(&["--sync-bn", "true"])
                .resolve("cifar10-resnet20")
                .unwrap()
                .sync_bn
        );
        let e = err(args(&["--cache"]).resolve("cifar10-resnet20"));
        assert!(e.contains("--cache") && e.contains("--zip"), "{e}");
        let e = err(args(&["--zip", "a", "--folder", "b"]).resolve("cifar10-resnet20"));
        assert!(e.contains("--folder and --zip given together"), "{e}");
        let e = err(args(&["--mixup=-0.5"]).resolve("cifar10-deit-tiny"));
        assert!(e.contains("mixup alpha must be >= 0"), "{e}");
        let e = err(args(&["--eval-subset", "0"]).resolve("cifar10-resnet20"));
        assert!(e.contains("eval subset must be at least 1"), "{e}");
        let e = err(args(&["--precision", "fp16"]).resolve("cifar10-resnet20"));
        assert!(e.contains("expected f32 or bf16"), "{e}");
    }

    #[test]
    fn resume_applies_what_may_change_and_refuses_what_defines_the_run() {
        let saved = args(&["--epochs", "4", "--out-dir", "old"])
            .resolve("cifar10-resnet20")
            .unwrap();
        let c = args(&["--epochs", "30", "--lr", "0.1", "--out-dir", "new"])
            .resolve_resumed(&saved, 4)
            .unwrap();
        assert_eq!((c.epochs, c.lr), (30, 0.1), "train longer, another lr");
        assert_eq!(
            c.out_dir,
            PathBuf::from("new"),
            "--out-dir is where the resumed run writes"
        );
        assert_eq!(c.model, saved.model);
        let same = args(&[]).resolve_resumed(&saved, 2).unwrap();
        assert_eq!(same, saved, "no options: exactly the saved run");
        let e = err(args(&["--model", "resnet56_cifar"]).resolve_resumed(&saved, 2));
        assert!(e.contains("--model does not apply to --resume"), "{e}");
        let e = err(args(&["--loss", "ce"]).resolve_resumed(&saved, 2));
        assert!(e.contains("--loss does not apply"), "{e}");
        let e = err(args(&["--recipe", "cifar100-resnet18"]).resolve_resumed(&saved, 2));
        assert!(
            e.contains("--recipe cifar100-resnet18 does not apply"),
            "{e}"
        );
        let e = err(args(&["--epochs", "3"]).resolve_resumed(&saved, 4));
        assert!(e.contains("already completed 4 epochs"), "{e}");
        let e = err(args(&[]).resolve_resumed(&saved, 4));
        assert!(
            e.contains("already completed 4 epochs"),
            "a finished run asks for more epochs: {e}"
        );
    }
}
