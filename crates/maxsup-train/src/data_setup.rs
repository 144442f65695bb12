//! Datasets, pipelines and loaders for a [`TrainConfig`].

use std::sync::Arc;

use anyhow::{Context, Result};
use maxsup_data::{
    Cifar10, CifarSplit, ColorJitter, Dataset, FashionMnist, FashionSplit, ImageFolder,
    Interpolation, Loader, LoaderConfig, Mixup, Pipeline, RandAugment, RandomErasing, RgbImage,
    ZipCache, ZipCacheOptions,
};

use crate::recipe::{DataSource, TrainConfig};

/// The training and evaluation loaders of a run.
pub struct DataLoaders {
    pub train: Loader,
    pub eval: Loader,
    pub num_classes: usize,
}

/// Opens the configured datasets and builds the loaders (augmentation per the recipe).
pub fn build_loaders(config: &TrainConfig) -> Result<DataLoaders> {
    let (train, eval) = open_datasets(&config.data)?;
    let train = subset(train, config.train_subset);
    let eval = subset(eval, config.eval_subset);
    let num_classes = train.num_classes();
    let (train_pipeline, eval_pipeline) = pipelines(config);
    let train_loader = Loader::new(
        train,
        train_pipeline,
        LoaderConfig::train(config.batch_size, config.seed),
    )?;
    let train_loader = if config.augment.mixes() {
        let mut mixup = Mixup::deit(num_classes, 0.0);
        mixup.mixup_alpha = config.augment.mixup;
        mixup.cutmix_alpha = config.augment.cutmix;
        train_loader.with_mixup(mixup)?
    } else {
        train_loader
    };
    let eval_loader = Loader::new(
        eval,
        eval_pipeline,
        LoaderConfig::eval(config.eval_batch_size),
    )?;
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

/// A sequential, un-augmented loader over one split (feature extraction, evaluation): the eval
/// transform of the data source, in dataset order, keeping the last partial batch.
pub fn build_eval_loader(
    config: &TrainConfig,
    split: Split,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<Loader> {
    let (train, val) = open_datasets(&config.data)?;
    let dataset = subset(if split == Split::Train { train } else { val }, limit);
    Loader::new(dataset, pipelines(config).1, LoaderConfig::eval(batch_size))
}

fn open_datasets(source: &DataSource) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    Ok(match source {
        DataSource::Cifar10 { dir } => {
            let hint = || {
                format!(
                    "opening CIFAR-10 in {} (run data/fetch-cifar10.sh)",
                    dir.display()
                )
            };
            let train = Cifar10::open(dir, CifarSplit::Train).with_context(hint)?;
            let test = Cifar10::open(dir, CifarSplit::Test).with_context(hint)?;
            (Arc::new(train), Arc::new(test))
        }
        DataSource::FashionMnist { dir } => {
            let hint = || {
                format!(
                    "opening Fashion-MNIST in {} (run data/fetch-fashion-mnist.sh)",
                    dir.display()
                )
            };
            let train = FashionMnist::open(dir, FashionSplit::Train).with_context(hint)?;
            let test = FashionMnist::open(dir, FashionSplit::Test).with_context(hint)?;
            (Arc::new(train), Arc::new(test))
        }
        DataSource::Folder { root } => {
            let train = ImageFolder::open(&root.join("train"))?;
            let val = ImageFolder::open(&root.join("val"))?;
            (Arc::new(train), Arc::new(val))
        }
        DataSource::Zip { root, cache } => {
            let options = ZipCacheOptions {
                cache: *cache,
                ..ZipCacheOptions::default()
            };
            let train = ZipCache::open_split(root, "train", options.clone())?;
            let val = ZipCache::open_split(root, "val", options)?;
            (Arc::new(train), Arc::new(val))
        }
    })
}

fn pipelines(config: &TrainConfig) -> (Pipeline, Pipeline) {
    let a = &config.augment;
    let (mut train, eval) = match config.data {
        DataSource::Cifar10 { .. } | DataSource::FashionMnist { .. } => {
            (Pipeline::cifar_train(), Pipeline::cifar_eval())
        }
        _ => {
            let interpolation = if a.bicubic {
                Interpolation::Bicubic
            } else {
                Interpolation::Bilinear
            };
            let train = if a.randaugment {
                Pipeline::deit_train(config.image_size)
            } else {
                Pipeline::imagenet_train(config.image_size, interpolation)
            };
            (
                train,
                Pipeline::imagenet_eval(config.image_size, 0.875, interpolation),
            )
        }
    };
    if a.randaugment && train.randaugment.is_none() {
        train.randaugment = Some(RandAugment::deit());
    }
    // timm applies color jitter only when auto-augment is off (DeiT's 0.3 is therefore unused).
    train.color_jitter =
        (a.color_jitter > 0.0 && !a.randaugment).then(|| ColorJitter::uniform(a.color_jitter));
    train.random_erasing = (a.random_erasing > 0.0).then(|| RandomErasing {
        prob: a.random_erasing,
        ..RandomErasing::deit()
    });
    (train, eval)
}

/// The first `n` samples of a dataset (quick runs and tests).
struct Subset {
    inner: Arc<dyn Dataset>,
    len: usize,
}

fn subset(dataset: Arc<dyn Dataset>, n: Option<usize>) -> Arc<dyn Dataset> {
    match n {
        Some(n) if n < dataset.len() => Arc::new(Subset {
            inner: dataset,
            len: n,
        }),
        _ => dataset,
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.len
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(index)
    }
    fn name(&self, index: usize) -> String {
        self.inner.name(index)
    }
    fn load(&self, index: usize) -> Result<RgbImage> {
        self.inner.load(index)
    }
}
