//! torchvision `ImageFolder`: `root/<class>/**/<image>`, classes = sorted sub-directory names,
//! label = position in that order, files = every image extension, walked in sorted order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::bounded_read::{read_at_most, MAX_ENCODED_IMAGE_BYTES};
use crate::dataset::{Dataset, RawSample};
use crate::decode::decode;
use crate::image::RgbImage;
use crate::map_file::{has_image_extension, IMG_EXTENSIONS};

/// An image-per-file dataset in class folders.
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    /// (path relative to root, label)
    samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    /// Scans `root`. A class folder without any image is an error (as in torchvision).
    pub fn open(root: &Path) -> anyhow::Result<ImageFolder> {
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(root)
            .with_context(|| format!("cannot list ImageFolder root {}", root.display()))?
        {
            let entry = entry.with_context(|| format!("listing {}", root.display()))?;
            if std::fs::metadata(entry.path())
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|n| anyhow::anyhow!("non-UTF-8 class folder {n:?}"))?;
                classes.push(name);
            }
        }
        classes.sort();
        if classes.is_empty() {
            bail!("ImageFolder root {} has no class folders", root.display());
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let before = samples.len();
            let mut files = Vec::new();
            walk(&root.join(class), &mut files)?;
            files.sort();
            for f in files {
                let rel = f.strip_prefix(root).unwrap_or(&f).to_path_buf();
                samples.push((rel, label as u32));
            }
            if samples.len() == before {
                bail!(
                    "class folder {} has no images (extensions: {})",
                    root.join(class).display(),
                    IMG_EXTENSIONS.join(" ")
                );
            }
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// (path relative to the root, label) in dataset order.
    pub fn samples(&self) -> &[(PathBuf, u32)] {
        &self.samples
    }
}

/// Collects image files below `dir` (following symlinks, like `os.walk(followlinks=True)`).
/// Sorting the full paths equals torchvision's sorted walk + sorted file names.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(has_image_extension)
        {
            out.push(path);
        }
    }
    Ok(())
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn num_classes(&self) -> usize {
        self.classes.len()
    }

    fn label(&self, index: usize) -> u32 {
        self.samples[index].1
    }

    fn name(&self, index: usize) -> String {
        self.root.join(&self.samples[index].0).display().to_string()
    }

    fn load(&self, index: usize) -> anyhow::Result<RgbImage> {
        let path = self.root.join(&self.samples[index].0);
        let bytes = read_at_most(&path, MAX_ENCODED_IMAGE_BYTES, "image")?;
        decode(&bytes).with_context(|| format!("decoding {}", path.display()))
    }

    fn load_raw(&self, index: usize) -> anyhow::Result<RawSample> {
        let path = self.root.join(&self.samples[index].0);
        Ok(RawSample::Encoded(read_at_most(
            &path,
            MAX_ENCODED_IMAGE_BYTES,
            "image",
        )?))
    }
}
