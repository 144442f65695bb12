//! One set of dataset flags for every command that reads images: `train-conv`, `train-vit`,
//! `maxsup extract`, `maxsup gradcam` and `maxsup data check` spell a data source the same way
//! and refuse the same mistakes (two sources, `--cache` without `--zip`, a resolution that the
//! source cannot have).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use maxsup_train::DataSource;

/// Where the images come from. Unset flags keep what the recipe or checkpoint says.
#[derive(Debug, Default, Clone, Args)]
pub struct DatasetArgs {
    /// CIFAR-10 binary batches directory (cifar-10-batches-bin).
    #[arg(long, value_name = "DIR")]
    pub cifar10: Option<PathBuf>,
    /// Fashion-MNIST IDX directory (padded to 32x32 RGB, CIFAR normalization).
    #[arg(long, value_name = "DIR")]
    pub fashion_mnist: Option<PathBuf>,
    /// ImageFolder root with train/ and val/ class folders.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Directory with the official zip cache: train.zip, val.zip, train_map.txt, val_map.txt.
    #[arg(long, value_name = "DIR")]
    pub zip: Option<PathBuf>,
    /// Read the zip archives into memory (the official --cache); needs --zip.
    #[arg(long)]
    pub cache: bool,
    /// Square input resolution in pixels of --folder/--zip data (224 for ImageNet; CIFAR-10 and
    /// Fashion-MNIST are 32).
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<usize>,
}

/// The resolution of the 32x32 sources (CIFAR-10, Fashion-MNIST padded).
const SMALL_IMAGE_SIZE: usize = 32;

impl DatasetArgs {
    /// The data source given, if any, after the checks every command shares: one source at
    /// most, `--cache` only with `--zip`.
    pub fn source(&self) -> Result<Option<DataSource>> {
        let given: Vec<&str> = [
            ("--cifar10", self.cifar10.is_some()),
            ("--fashion-mnist", self.fashion_mnist.is_some()),
            ("--folder", self.folder.is_some()),
            ("--zip", self.zip.is_some()),
        ]
        .iter()
        .filter(|s| s.1)
        .map(|s| s.0)
        .collect();
        if given.len() > 1 {
            bail!(
                "{} given together: choose one data source",
                given.join(" and ")
            );
        }
        if self.cache && self.zip.is_none() {
            bail!("--cache reads the zip cache into memory; it needs --zip DIR");
        }
        if let Some(size) = self.image_size {
            if size == 0 {
                bail!("--image-size must be at least 1 pixel");
            }
        }
        Ok(if let Some(dir) = &self.cifar10 {
            Some(DataSource::Cifar10 { dir: dir.clone() })
        } else if let Some(dir) = &self.fashion_mnist {
            Some(DataSource::FashionMnist { dir: dir.clone() })
        } else if let Some(root) = &self.folder {
            Some(DataSource::Folder { root: root.clone() })
        } else {
            self.zip.as_ref().map(|root| DataSource::Zip {
                root: root.clone(),
                cache: self.cache,
            })
        })
    }

    /// Writes the given source and resolution over `data` and `image_size` (a recipe's or a
    /// checkpoint's). A new folder/zip source without `--image-size` takes 224 unless the
    /// previous source was folder/zip too (then its resolution stays); the 32x32 sources take
    /// 32, and `--image-size` with them is an error naming the flag.
    pub fn apply(&self, data: &mut DataSource, image_size: &mut usize) -> Result<()> {
        let previous_small = is_small(data);
        if let Some(source) = self.source()? {
            *data = source;
            if is_small(data) {
                *image_size = SMALL_IMAGE_SIZE;
            } else if previous_small {
                *image_size = 224;
            }
        }
        if let Some(size) = self.image_size {
            if is_small(data) && size != SMALL_IMAGE_SIZE {
                bail!(
                    "--image-size {size} does not apply to CIFAR-10 or Fashion-MNIST data: \
                     their images are {SMALL_IMAGE_SIZE}x{SMALL_IMAGE_SIZE}"
                );
            }
            *image_size = size;
        }
        Ok(())
    }
}

fn is_small(data: &DataSource) -> bool {
    matches!(
        data,
        DataSource::Cifar10 { .. } | DataSource::FashionMnist { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DatasetArgs,
    }

    fn parse(flags: &[&str]) -> DatasetArgs {
        let mut argv = vec!["x"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("flags parse").data
    }

    fn cifar() -> (DataSource, usize) {
        (DataSource::Cifar10 { dir: "c".into() }, 32)
    }

    #[test]
    fn one_source_at_most_and_cache_only_with_zip() {
        let e = parse(&["--zip", "a", "--folder", "b"])
            .source()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--folder and --zip given together"), "{e}");
        let e = parse(&["--cifar10", "a", "--fashion-mnist", "b"])
            .source()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cifar10 and --fashion-mnist"), "{e}");
        let e = parse(&["--cache", "--folder", "b"])
            .source()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cache") && e.contains("needs --zip"), "{e}");
        let e = parse(&["--image-size", "0"])
            .source()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--image-size must be at least 1"), "{e}");
        assert_eq!(
            parse(&["--zip", "z", "--cache"]).source().unwrap(),
            Some(DataSource::Zip {
                root: "z".into(),
                cache: true
            })
        );
        assert_eq!(parse(&[]).source().unwrap(), None);
    }

    #[test]
    fn resolution_follows_the_source_and_is_refused_where_it_cannot_apply() {
        let (mut data, mut size) = cifar();
        parse(&["--folder", "f"])
            .apply(&mut data, &mut size)
            .unwrap();
        assert_eq!(
            (data.clone(), size),
            (DataSource::Folder { root: "f".into() }, 224)
        );
        parse(&["--zip", "z"]).apply(&mut data, &mut size).unwrap();
        assert_eq!(size, 224);
        let mut size = 160;
        parse(&["--zip", "z"]).apply(&mut data, &mut size).unwrap();
        assert_eq!(size, 160, "a folder/zip run keeps its resolution");
        parse(&["--image-size", "96"])
            .apply(&mut data, &mut size)
            .unwrap();
        assert_eq!(size, 96);
        parse(&["--cifar10", "c"])
            .apply(&mut data, &mut size)
            .unwrap();
        assert_eq!(size, 32);
        let e = parse(&["--image-size", "64"])
            .apply(&mut data, &mut size)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--image-size 64 does not apply to CIFAR-10"),
            "{e}"
        );
        parse(&["--image-size", "32"])
            .apply(&mut data, &mut size)
            .unwrap();
    }
}
