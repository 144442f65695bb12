//! `maxsup extract`: penultimate features, logits and labels of a checkpoint over a split.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use maxsup_analysis::{extract_features, load_model_weights, WeightSet};
use maxsup_cli::DatasetArgs;
use maxsup_data::ClassIndexConverter;
use maxsup_models::DataConfig;
use maxsup_train::{build_eval_loader, parse_device, DataSource, EvalInput, Split, TrainConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Split {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Val => Split::Val,
        }
    }
}

/// Which class order the model's logits follow on zip-cache data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassOrder {
    /// Zip order for runs trained on the zip cache, sorted wnids for everything else.
    Auto,
    /// The map file's order (e.g. the official DeiT code trained with --cache).
    Zip,
    /// Sorted wnids (torchvision ImageFolder, FFCV, released torchvision/timm weights).
    Sorted,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training checkpoint (last/best.safetensors), plain safetensors or PyTorch .pth weights.
    #[arg(long)]
    pub weights: PathBuf,
    /// Model name, needed for plain weight files (e.g. resnet50).
    #[arg(long)]
    pub model: Option<String>,
    /// Which split to extract.
    #[arg(long, value_enum, default_value = "val")]
    pub split: SplitArg,
    #[command(flatten)]
    pub data: DatasetArgs,
    /// Use the EMA weights of a training checkpoint (runs trained with --ema-decay).
    #[arg(long)]
    pub ema: bool,
    /// Only the first N samples of the split.
    #[arg(long, value_parser = super::at_least_one())]
    pub limit: Option<usize>,
    /// Images per forward pass.
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 250)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Class order of the model on --zip data (the labels written follow it).
    #[arg(long, value_enum, default_value = "auto")]
    pub class_order: ClassOrder,
    /// Output feature file (safetensors: features, logits, labels).
    #[arg(long)]
    pub out: PathBuf,
}

/// What to read and how: a training checkpoint's data and evaluation transform with any dataset
/// flag applied, or for plain weight files the flags' data read as the model declares
/// (`model_data`: its input size, crop, interpolation and normalisation).
pub fn eval_input(
    data: &DatasetArgs,
    from_checkpoint: Option<&TrainConfig>,
    model_data: &DataConfig,
) -> Result<EvalInput> {
    let mut input = match from_checkpoint {
        Some(c) => EvalInput::of_run(c),
        None => match data.source()? {
            Some(source) => EvalInput::for_model(source, model_data),
            None => bail!(
                "plain weight files need the data: --cifar10, --fashion-mnist, --folder or --zip"
            ),
        },
    };
    data.apply(&mut input.source, &mut input.image_size)?;
    Ok(input)
}

/// The zip cache labels classes in its map file's order; models not trained on the zip cache
/// (released torchvision/timm weights, ImageFolder runs) predict sorted-wnid classes. For those,
/// the labels written are converted to sorted order so that logits and labels agree.
fn label_order(
    trained_on_zip: bool,
    source: &DataSource,
    split: SplitArg,
    order: ClassOrder,
) -> Result<Option<ClassIndexConverter>> {
    let DataSource::Zip { root, .. } = source else {
        if order != ClassOrder::Auto {
            bail!("--class-order applies to zip-cache data (--zip) only");
        }
        return Ok(None);
    };
    if order == ClassOrder::Zip || (order == ClassOrder::Auto && trained_on_zip) {
        return Ok(None);
    }
    let map = root.join(format!("{}_map.txt", Split::from(split).name()));
    let converter = ClassIndexConverter::from_map_file_to_sorted(&map)?;
    eprintln!(
        "labels written in sorted-wnid order (the model's), converted from the order of {}",
        map.display()
    );
    Ok(Some(converter))
}

pub fn run(args: Args) -> Result<()> {
    if args.limit == Some(0) {
        bail!("--limit must be at least 1 (leave it out for the whole split)");
    }
    let device = parse_device(&args.device)?;
    let set = if args.ema {
        WeightSet::Ema
    } else {
        WeightSet::Trained
    };
    let loaded = load_model_weights(&args.weights, args.model.as_deref(), set, &device)?;
    let trained_on_zip = matches!(
        loaded.config.as_ref().map(|c| &c.input.source),
        Some(DataSource::Zip { .. })
    );
    let input = eval_input(
        &args.data,
        loaded.config.as_ref(),
        &loaded.model.info().data,
    )?;
    let split = Split::from(args.split);
    let loader = build_eval_loader(&input, split, args.batch_size, args.limit)?;
    let bar = ProgressBar::new(loader.shard_indices().len() as u64);
    bar.set_style(
        ProgressStyle::with_template("extract [{bar:30}] {pos}/{len} {per_sec} eta {eta}")?
            .progress_chars("=> "),
    );
    let converter = label_order(trained_on_zip, &input.source, args.split, args.class_order)?;
    let n = extract_features(
        loaded.model.as_ref(),
        &loader,
        &device,
        &args.out,
        converter.as_ref(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_source(root: &std::path::Path) -> DataSource {
        DataSource::Zip {
            root: root.to_path_buf(),
            cache: false,
        }
    }

    #[test]
    fn labels_follow_the_models_class_order_on_zip_data() {
        let root = std::env::temp_dir().join(format!("maxsup-class-order-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        // Zip order: n02 = 0, n01 = 1 (not sorted).
        std::fs::write(
            root.join("val_map.txt"),
            "val/n02000000/a.JPEG\t0\nval/n01000000/b.JPEG\t1\n",
        )
        .unwrap();
        let c = zip_source(&root);
        let sorted = label_order(false, &c, SplitArg::Val, ClassOrder::Auto)
            .unwrap()
            .expect("released weights predict sorted wnids");
        assert_eq!(
            (
                sorted.zip_to_target(0).unwrap(),
                sorted.zip_to_target(1).unwrap()
            ),
            (1, 0)
        );
        assert!(label_order(true, &c, SplitArg::Val, ClassOrder::Auto)
            .unwrap()
            .is_none());
        assert!(label_order(false, &c, SplitArg::Val, ClassOrder::Zip)
            .unwrap()
            .is_none());
        assert!(label_order(true, &c, SplitArg::Val, ClassOrder::Sorted)
            .unwrap()
            .is_some());
        let cifar = TrainConfig::preset("cifar10-resnet20")
            .unwrap()
            .input
            .source;
        assert!(label_order(false, &cifar, SplitArg::Val, ClassOrder::Auto)
            .unwrap()
            .is_none());
        let e = label_order(false, &cifar, SplitArg::Val, ClassOrder::Sorted).unwrap_err();
        assert!(
            e.to_string()
                .contains("--class-order applies to zip-cache data"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Plain weights are read as the model declares (timm's data config); a training
    /// checkpoint as its run evaluated; `--image-size` overrides either.
    #[test]
    fn eval_input_follows_the_model_or_the_run() {
        use maxsup_data::Interpolation;
        use maxsup_models::{model_info, Normalization};
        let folder = DatasetArgs {
            folder: Some("imgs".into()),
            ..DatasetArgs::default()
        };
        let info = |name: &str| model_info(name).unwrap().data;
        let r50 = eval_input(&folder, None, &info("resnet50")).unwrap();
        assert_eq!(
            (r50.image_size, r50.interpolation, r50.normalization),
            (224, Interpolation::Bilinear, Normalization::ImageNet)
        );
        let deit = eval_input(&folder, None, &info("deit_small_patch16_224")).unwrap();
        assert_eq!(deit.interpolation, Interpolation::Bicubic);
        let small = eval_input(&folder, None, &info("resnet20_cifar")).unwrap();
        assert_eq!(
            (small.image_size, small.normalization),
            (32, Normalization::Cifar10)
        );
        let sized = DatasetArgs {
            image_size: Some(160),
            ..folder.clone()
        };
        assert_eq!(
            eval_input(&sized, None, &info("resnet50"))
                .unwrap()
                .image_size,
            160
        );
        let run = TrainConfig::preset("deit-small-imagenet").unwrap();
        let from_run = eval_input(&folder, Some(&run), &info("resnet50")).unwrap();
        assert_eq!(from_run.source, folder.source().unwrap().unwrap());
        assert_eq!(from_run.interpolation, Interpolation::Bicubic);
        let e = eval_input(&DatasetArgs::default(), None, &info("resnet50")).unwrap_err();
        assert!(
            e.to_string().contains("plain weight files need the data"),
            "{e}"
        );
    }
}
