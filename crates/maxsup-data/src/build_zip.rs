//! Converts an ImageFolder tree (`ROOT/train/<wnid>/...`, `ROOT/val/<wnid>/...`) into the official
//! zip-cache layout: `OUT/<split>.zip` (members `<split>/<wnid>/<file>`, stored, i.e. not recompressed,
//! like `zip -r` of JPEGs would effectively be) and `OUT/<split>_map.txt` (`<member>\t<label>` lines).
//! Labels are the sorted-wnid order of the first split, shared by all splits.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::dataset::Dataset;
use crate::image_folder::ImageFolder;

/// What was written for one split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltSplit {
    pub split: String,
    pub zip: PathBuf,
    pub map: PathBuf,
    pub samples: usize,
    pub classes: usize,
}

/// Builds `train` and/or `val` (whichever exist under `root`). Errors if neither exists, or if the
/// splits have different class folders.
pub fn build_zip_from_folder(root: &Path, out: &Path) -> anyhow::Result<Vec<BuiltSplit>> {
    let splits: Vec<&str> = ["train", "val"]
        .into_iter()
        .filter(|s| root.join(s).is_dir())
        .collect();
    if splits.is_empty() {
        bail!("{} has neither a train/ nor a val/ folder", root.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut classes: Option<Vec<String>> = None;
    let mut built = Vec::new();
    for split in splits {
        let folder = ImageFolder::open(&root.join(split))?;
        match &classes {
            None => classes = Some(folder.classes().to_vec()),
            Some(c) if c != folder.classes() => {
                bail!(
                    "{}/{split} has different class folders than the first split",
                    root.display()
                )
            }
            Some(_) => {}
        }
        built.push(write_split(&folder, split, out)?);
    }
    Ok(built)
}

fn write_split(folder: &ImageFolder, split: &str, out: &Path) -> anyhow::Result<BuiltSplit> {
    let zip_path = out.join(format!("{split}.zip"));
    let map_path = out.join(format!("{split}_map.txt"));
    let file = std::fs::File::create(&zip_path)
        .with_context(|| format!("cannot create {}", zip_path.display()))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let mut map = String::new();
    for (rel, label) in folder.samples() {
        let rel = rel
            .to_str()
            .with_context(|| format!("non-UTF-8 path {}", rel.display()))?;
        let member = format!("{split}/{}", rel.replace('\\', "/"));
        let src = folder.root().join(rel);
        let bytes =
            std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        zip.start_file(member.as_str(), options)
            .with_context(|| format!("adding {member} to {}", zip_path.display()))?;
        zip.write_all(&bytes)
            .with_context(|| format!("writing {member} to {}", zip_path.display()))?;
        map.push_str(&format!("{member}\t{label}\n"));
    }
    zip.finish()
        .with_context(|| format!("finishing {}", zip_path.display()))?
        .flush()?;
    std::fs::write(&map_path, map)
        .with_context(|| format!("cannot write {}", map_path.display()))?;
    Ok(BuiltSplit {
        split: split.into(),
        zip: zip_path,
        map: map_path,
        samples: folder.len(),
        classes: folder.classes().len(),
    })
}
