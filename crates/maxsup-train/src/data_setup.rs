//! Datasets, pipelines and loaders for a [`TrainConfig`].

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use maxsup_data::{
    Cifar10, CifarSplit, ColorJitter, Dataset, FashionMnist, FashionSplit, ImageFolder,
    Interpolation, Loader, LoaderConfig, Mixup, Pipeline, RandAugment, RandomErasing, Subset,
    ZipCache, ZipCacheOptions,
};

use crate::device::DeviceSpec;
use crate::recipe::{DataSource, TrainConfig};
use maxsup_models::{DataConfig, Normalization, ResizeFilter};

/// The training and evaluation loaders of a run.
pub struct DataLoaders {
    pub train: Loader,
    pub eval: Loader,
    pub num_classes: usize,
}

/// Opens the configured datasets and builds the loaders (augmentation per the recipe).
pub fn build_loaders(config: &TrainConfig) -> Result<DataLoaders> {
    build_loaders_for_rank(config, 0, 1)
}

/// [`build_loaders`] for rank `rank` of `world` processes: this rank's part of every global
/// training batch (the samples of a step do not depend on `world`) and its interleaved shard of
/// the evaluation split (metrics are then summed over the ranks).
///
/// With the zip cache read into memory (`--cache`), each rank holds only the samples `i` with
/// `i % world == rank`, as DeiT's `--cache` does, and so trains on that shard alone: a fresh
/// shuffle of it every epoch, `batch_size / world` samples per step, `floor(N / world)` samples
/// per rank and epoch. The samples of a step then depend on `world` (as they do in DeiT).
pub fn build_loaders_for_rank(
    config: &TrainConfig,
    rank: usize,
    world: usize,
) -> Result<DataLoaders> {
    let cached_shards =
        world > 1 && matches!(config.input.source, DataSource::Zip { cache: true, .. });
    let (train, eval) = open_datasets(&config.input.source, rank, world)?;
    let train = subset(train, config.train_subset).context("--train-subset")?;
    let eval = subset(eval, config.eval_subset).context("--eval-subset")?;
    let num_classes = train.num_classes();
    let (train_pipeline, eval_pipeline) = pipelines(config);
    let on_gpu = DeviceSpec::parse(&config.device)? != DeviceSpec::Cpu;
    let mixes = config.input.augment.mixes();
    let mut train_config = if cached_shards {
        if !config.batch_size.is_multiple_of(world) {
            bail!(
                "--batch-size {}: the global batch is not divisible by the {world} processes \
                 (each takes an equal part)",
                config.batch_size
            );
        }
        LoaderConfig::train(config.batch_size / world, config.seed).with_shard(rank, world)
    } else {
        LoaderConfig::train(config.batch_size, config.seed).with_global_batch_part(rank, world)
    };
    train_config.pixels = pixel_batches(on_gpu, &train_pipeline, mixes);
    let train_loader = Loader::new(train, train_pipeline, train_config)
        .with_context(|| format!("--batch-size {}", config.batch_size))?;
    let train_loader = if mixes {
        let mut mixup = Mixup::deit(num_classes, 0.0);
        mixup.mixup_alpha = config.input.augment.mixup;
        mixup.cutmix_alpha = config.input.augment.cutmix;
        train_loader.with_mixup(mixup)?
    } else {
        train_loader
    };
    let eval_config = LoaderConfig {
        pixels: pixel_batches(on_gpu, &eval_pipeline, false),
        ..LoaderConfig::eval(config.eval_batch_size).with_shard(rank, world)
    };
    let eval_loader = Loader::new(eval, eval_pipeline, eval_config)?;
    Ok(DataLoaders {
        train: train_loader,
        eval: eval_loader,
        num_classes,
    })
}

/// Which part of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    /// The validation split (CIFAR-10: the test batch).
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// What an evaluation pass reads and how it transforms the images: a training run's data and
/// evaluation transform, or a data source read the way a model declares (released weights).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalInput {
    pub source: DataSource,
    /// Side of the centre crop (ignored for CIFAR-10 and Fashion-MNIST, read as they are).
    pub image_size: usize,
    /// Resize-then-crop fraction.
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub normalization: Normalization,
}

impl EvalInput {
    /// The evaluation the run `config` uses after every epoch.
    pub fn of_run(config: &TrainConfig) -> Self {
        Self {
            source: config.input.source.clone(),
            image_size: config.input.image_size,
            crop_pct: 0.875,
            interpolation: eval_interpolation(config),
            normalization: Normalization::ImageNet,
        }
    }

    /// `source` read the way a model with data config `data` expects.
    pub fn for_model(source: DataSource, data: &DataConfig) -> Self {
        Self {
            source,
            image_size: data.input_size,
            crop_pct: data.crop_pct,
            interpolation: match data.interpolation {
                ResizeFilter::Bilinear => Interpolation::Bilinear,
                ResizeFilter::Bicubic => Interpolation::Bicubic,
            },
            normalization: data.normalization,
        }
    }

    /// The un-augmented transform: CIFAR-10 and Fashion-MNIST as they are (their training
    /// statistics), other data resized by `image_size / crop_pct` and centre-cropped.
    pub fn pipeline(&self) -> Pipeline {
        if is_small(&self.source) {
            return Pipeline::cifar_eval();
        }
        let mut p = Pipeline::imagenet_eval(self.image_size, self.crop_pct, self.interpolation);
        if self.normalization == Normalization::Cifar10 {
            (p.mean, p.std) = (maxsup_data::CIFAR10_MEAN, maxsup_data::CIFAR10_STD);
        }
        p
    }
}

/// A sequential, un-augmented loader over one split (feature extraction, evaluation), in
/// dataset order, keeping the last partial batch.
pub fn build_eval_loader(
    input: &EvalInput,
    split: Split,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<Loader> {
    let dataset = subset(open_split(&input.source, split)?, limit)?;
    Loader::new(dataset, input.pipeline(), LoaderConfig::eval(batch_size))
}

/// Whether a loader hands out 8-bit pixels, normalized on the device: on a GPU, where that
/// quarters the bytes copied per step, when the pipeline and Mixup/CutMix allow it (random
/// erasing and mixing work on normalized values). On the CPU the loader's threads normalize,
/// in parallel with the step.
pub(crate) fn pixel_batches(on_gpu: bool, pipeline: &Pipeline, mixes: bool) -> bool {
    on_gpu && pipeline.has_pixel_output() && !mixes
}

fn is_small(source: &DataSource) -> bool {
    matches!(
        source,
        DataSource::Cifar10 { .. } | DataSource::FashionMnist { .. }
    )
}

fn eval_interpolation(config: &TrainConfig) -> Interpolation {
    if config.input.augment.bicubic {
        Interpolation::Bicubic
    } else {
        Interpolation::Bilinear
    }
}

/// Both splits, which must label the same classes: a class only one split has would shift every
/// label after it (ImageFolder) or score against a logit the model does not have.
fn open_datasets(
    source: &DataSource,
    rank: usize,
    world: usize,
) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    if let DataSource::Folder { root } = source {
        let (train, val) = (
            ImageFolder::open(&root.join("train"))?,
            ImageFolder::open(&root.join("val"))?,
        );
        if train.classes() != val.classes() {
            let only = |a: &ImageFolder, b: &ImageFolder| -> Vec<String> {
                a.classes()
                    .iter()
                    .filter(|c| !b.classes().contains(c))
                    .cloned()
                    .collect()
            };
            bail!(
                "{}: train/ and val/ have different class folders (only in train/: {:?}; only in \
                 val/: {:?})",
                root.display(),
                only(&train, &val),
                only(&val, &train)
            );
        }
        return Ok((Arc::new(train), Arc::new(val)));
    }
    let (train, val) = (
        open_split_for_rank(source, Split::Train, rank, world)?,
        open_split_for_rank(source, Split::Val, rank, world)?,
    );
    if val.num_classes() > train.num_classes() {
        bail!(
            "the val split has labels up to {} but the train split only {} classes",
            val.num_classes() - 1,
            train.num_classes()
        );
    }
    Ok((train, val))
}

/// Opens one split of the data source (only that one: with `--cache` a split is read into
/// memory, so extracting validation features must not touch the training archive).
pub fn open_split(source: &DataSource, split: Split) -> Result<Arc<dyn Dataset>> {
    open_split_for_rank(source, split, 0, 1)
}

/// [`open_split`] for rank `rank` of `world`: with `--cache`, only the rank's interleaved shard
/// is read into memory.
fn open_split_for_rank(
    source: &DataSource,
    split: Split,
    rank: usize,
    world: usize,
) -> Result<Arc<dyn Dataset>> {
    let train = split == Split::Train;
    Ok(match source {
        DataSource::Cifar10 { dir } => {
            let which = if train {
                CifarSplit::Train
            } else {
                CifarSplit::Test
            };
            Arc::new(Cifar10::open(dir, which).with_context(|| {
                format!(
                    "opening CIFAR-10 in {} (run data/fetch-cifar10.sh)",
                    dir.display()
                )
            })?)
        }
        DataSource::FashionMnist { dir } => {
            let which = if train {
                FashionSplit::Train
            } else {
                FashionSplit::Test
            };
            Arc::new(FashionMnist::open(dir, which).with_context(|| {
                format!(
                    "opening Fashion-MNIST in {} (run data/fetch-fashion-mnist.sh)",
                    dir.display()
                )
            })?)
        }
        DataSource::Folder { root } => Arc::new(ImageFolder::open(&root.join(if train {
            "train"
        } else {
            "val"
        }))?),
        DataSource::Zip { root, cache } => {
            let options = ZipCacheOptions {
                cache: *cache,
                rank,
                world_size: world,
                ..ZipCacheOptions::default()
            };
            Arc::new(ZipCache::open_split(
                root,
                if train { "train" } else { "val" },
                options,
            )?)
        }
    })
}

/// The training and evaluation transforms of a run. The training one is built from the
/// recipe's [`crate::AugmentConfig`] alone (the one place DeiT's augmentation is decided), on
/// the geometry of the data: pad-crop for the 32x32 sources, RandomResizedCrop otherwise.
fn pipelines(config: &TrainConfig) -> (Pipeline, Pipeline) {
    let a = &config.input.augment;
    let eval = EvalInput::of_run(config).pipeline();
    let mut train = if is_small(&config.input.source) {
        Pipeline::cifar_train()
    } else {
        Pipeline::imagenet_train(config.input.image_size, eval_interpolation(config))
    };
    train.randaugment = a.randaugment.then(RandAugment::deit);
    // timm applies color jitter only when auto-augment is off (DeiT's 0.3 is therefore unused).
    train.color_jitter =
        (a.color_jitter > 0.0 && !a.randaugment).then(|| ColorJitter::uniform(a.color_jitter));
    train.random_erasing = (a.random_erasing > 0.0).then(|| RandomErasing {
        prob: a.random_erasing,
        ..RandomErasing::deit()
    });
    (train, eval)
}

/// The first `n` samples of `dataset` (all of them for `None`; more than it has is an error).
fn subset(dataset: Arc<dyn Dataset>, n: Option<usize>) -> Result<Arc<dyn Dataset>> {
    match n {
        Some(n) if n != dataset.len() => Ok(Arc::new(Subset::first(dataset, n)?)),
        _ => Ok(dataset),
    }
}
