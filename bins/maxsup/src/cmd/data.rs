//! `maxsup data ...`: check datasets (zip cache + map, ImageFolder, CIFAR-10) and build zip caches.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use maxsup_cli::DatasetArgs;
use maxsup_data::{build_zip_from_folder, Dataset};
use maxsup_train::{open_split, Split};

use super::extract::SplitArg;
use rayon::prelude::*;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Validate a dataset and print a summary; exits non-zero with the error on bad input.
    Check(CheckArgs),
    /// Turn an ImageFolder tree ROOT/{train,val}/<class>/... into OUT/{train,val}.zip + *_map.txt.
    BuildZip(BuildZipArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The data source, spelled as for training (the split is opened exactly as training
    /// opens it).
    #[command(flatten)]
    data: DatasetArgs,
    /// Split to check (CIFAR-10 and Fashion-MNIST: val is the test set).
    #[arg(long, value_enum, default_value = "train")]
    split: SplitArg,
    /// Expected number of classes (labels must be below it).
    #[arg(long)]
    num_classes: Option<usize>,
    /// Decode this many samples (from the start) to validate the images.
    #[arg(long, default_value_t = 64)]
    decode: usize,
    /// Decode every sample (all cores).
    #[arg(long)]
    decode_all: bool,
    /// Count undecodable images instead of stopping at the first one.
    #[arg(long)]
    skip_corrupt: bool,
    /// Entries to print.
    #[arg(long, default_value_t = 5)]
    show: usize,
}

#[derive(clap::Args)]
struct BuildZipArgs {
    /// ImageFolder root holding train/ and/or val/ with one folder per class.
    #[arg(long)]
    folder: PathBuf,
    /// Output directory for train.zip, train_map.txt, val.zip, val_map.txt.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Check(a) => check(a),
        DataCommand::BuildZip(a) => {
            for s in build_zip_from_folder(&a.folder, &a.out)? {
                println!(
                    "{}: {} samples, {} classes -> {} + {}",
                    s.split,
                    s.samples,
                    s.classes,
                    s.zip.display(),
                    s.map.display()
                );
            }
            Ok(())
        }
    }
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    if let Some(size) = a.data.image_size {
        anyhow::bail!(
            "--image-size {size} does not apply to data check: it checks the stored images"
        );
    }
    let Some(source) = a.data.source()? else {
        anyhow::bail!("give the data to check: --cifar10, --fashion-mnist, --folder or --zip DIR");
    };
    let split = Split::from(a.split);
    let ds = open_split(&source, split)?;
    if let Some(k) = a.num_classes {
        if ds.num_classes() > k {
            anyhow::bail!(
                "the {} split has labels up to {} ({} classes); --num-classes says {k}",
                split.name(),
                ds.num_classes() - 1,
                ds.num_classes()
            );
        }
    }
    summarize(ds.as_ref(), a.show);
    let n = if a.decode_all {
        ds.len()
    } else {
        a.decode.min(ds.len())
    };
    let failures: Vec<(usize, String)> = (0..n)
        .into_par_iter()
        .filter_map(|i| {
            verify_sample(ds.as_ref(), i)
                .err()
                .map(|e| (i, format!("{e:#}")))
        })
        .collect();
    println!(
        "decoded: {} of {} samples, {} failed",
        n,
        ds.len(),
        failures.len()
    );
    if let Some((i, e)) = failures.first() {
        if !a.skip_corrupt {
            return Err(anyhow::anyhow!("{e}"))
                .with_context(|| format!("sample {i} failed to decode"));
        }
        for (i, e) in failures.iter().take(10) {
            println!("  skipped sample {i}: {e}");
        }
    }
    Ok(())
}

/// Sample `i` read as training reads it, then decoded whole by every decoder training may use
/// (`maxsup_data::verify_image`), so that a file passes here exactly when no crop can fail.
fn verify_sample(ds: &dyn Dataset, i: usize) -> anyhow::Result<()> {
    match ds.load_raw(i)? {
        maxsup_data::RawSample::Encoded(bytes) => {
            maxsup_data::verify_image(&bytes).with_context(|| format!("decoding {}", ds.name(i)))
        }
        maxsup_data::RawSample::Decoded(_) => Ok(()),
    }
}

fn summarize(ds: &dyn Dataset, show: usize) {
    let k = ds.num_classes();
    let mut counts = vec![0usize; k];
    for i in 0..ds.len() {
        counts[ds.label(i) as usize] += 1;
    }
    let (lo, hi) = (0..ds.len())
        .map(|i| ds.label(i))
        .fold((u32::MAX, 0), |(l, h), v| (l.min(v), h.max(v)));
    println!("samples: {}", ds.len());
    println!("classes: {k} (labels {lo}..={hi})");
    println!(
        "per class: min {} max {}",
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0)
    );
    for i in 0..show.min(ds.len()) {
        println!("  [{i}] label {:>4}  {}", ds.label(i), ds.name(i));
    }
}
