//! `maxsup extract`: penultimate features, logits and labels of a checkpoint over a split.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use maxsup_analysis::{extract_features, load_model};
use maxsup_train::{build_eval_loader, parse_device, DataSource, Split, TrainConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training checkpoint (last/best.safetensors), plain safetensors or PyTorch .pth weights.
    #[arg(long)]
    pub weights: PathBuf,
    /// Model name, needed for plain weight files (e.g. resnet50).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value = "val")]
    pub split: SplitArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Only the first N samples of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output feature file (safetensors: features, logits, labels).
    #[arg(long)]
    pub out: PathBuf,
}

/// Where the images come from when the weights do not say it (or to override it).
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// CIFAR-10 binary batches.
    #[arg(long, value_name = "DIR")]
    pub cifar10: Option<PathBuf>,
    /// Fashion-MNIST IDX directory (padded to 32x32 RGB; CIFAR normalization).
    #[arg(long, value_name = "DIR")]
    pub fashion_mnist: Option<PathBuf>,
    /// ImageFolder root with train/ and val/.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Official zip cache directory.
    #[arg(long, value_name = "DIR")]
    pub zip: Option<PathBuf>,
    /// Input resolution for folder/zip data.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
}

impl DataArgs {
    /// The data part of a configuration: the training run's, overridden by any option given.
    pub fn resolve(&self, from_checkpoint: Option<TrainConfig>) -> Result<TrainConfig> {
        let given = match (&self.cifar10, &self.fashion_mnist, &self.folder, &self.zip) {
            (Some(dir), None, None, None) => Some((DataSource::Cifar10 { dir: dir.clone() }, 32)),
            (None, Some(dir), None, None) => {
                Some((DataSource::FashionMnist { dir: dir.clone() }, 32))
            }
            (None, None, Some(root), None) => {
                Some((DataSource::Folder { root: root.clone() }, self.image_size))
            }
            (None, None, None, Some(root)) => Some((
                DataSource::Zip {
                    root: root.clone(),
                    cache: false,
                },
                self.image_size,
            )),
            (None, None, None, None) => None,
            _ => bail!("give one of --cifar10, --fashion-mnist, --folder, --zip"),
        };
        match (from_checkpoint, given) {
            (Some(mut c), Some((data, size))) => {
                c.data = data;
                c.image_size = size;
                Ok(c)
            }
            (Some(c), None) => Ok(c),
            (None, Some((data, size))) => {
                let mut c = TrainConfig::preset("cifar10-resnet20")?;
                c.data = data;
                c.image_size = size;
                Ok(c)
            }
            (None, None) => bail!(
                "plain weight files need the data: --cifar10, --fashion-mnist, --folder or --zip"
            ),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.limit == Some(0) {
        bail!("--limit must be at least 1 (leave it out for the whole split)");
    }
    let device = parse_device(&args.device)?;
    let loaded = load_model(&args.weights, args.model.as_deref(), &device)?;
    let config = args.data.resolve(loaded.config)?;
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Val => Split::Val,
    };
    let loader = build_eval_loader(&config, split, args.batch_size, args.limit)?;
    let bar = ProgressBar::new(loader.shard_indices().len() as u64);
    bar.set_style(
        ProgressStyle::with_template("extract [{bar:30}] {pos}/{len} {per_sec} eta {eta}")?
            .progress_chars("=> "),
    );
    let n = extract_features(
        loaded.model.as_ref(),
        &loader,
        &device,
        &args.out,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let (model_k, data_k) = (loaded.model.num_classes(), loader.dataset().num_classes());
    let logits = if model_k == data_k {
        format!("{model_k} logits")
    } else {
        format!("no logits: the data has {data_k} classes, the model {model_k}")
    };
    println!(
        "wrote {} samples ({}-d features, {logits}) to {}",
        n,
        loaded.model.num_features(),
        args.out.display()
    );
    Ok(())
}
