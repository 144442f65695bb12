//! The DeiT zip-cache map file (`train_map.txt` / `val_map.txt`): one `<path>\t<label>` per line.
//!
//! Parsing follows the official `make_dataset_with_ann`: split on tab, field 0 is the path, field 1
//! the integer label (surrounding whitespace allowed), the lower-cased extension must be an image
//! extension, and every `ImageNet/` is removed from the path. Unlike the original, bad lines are
//! reported with their file and line number instead of a Python traceback.

use std::path::Path;

use anyhow::{bail, Context};

/// torchvision's `IMG_EXTENSIONS` (compared lower-cased).
pub const IMG_EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// True when the lower-cased name ends with one of [`IMG_EXTENSIONS`].
pub fn has_image_extension(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    IMG_EXTENSIONS.iter().any(|e| lower.ends_with(e))
}

/// One line of a map file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// The path with every `ImageNet/` removed, e.g. `train/n03146219/n03146219_8050.JPEG`.
    pub path: String,
    pub label: u32,
    /// 1-based line number in the map file.
    pub line: usize,
}

/// Parses map text; `origin` names the file in errors. Blank lines are ignored. Entries are returned
/// in file order (the dataset sorts them).
pub fn parse_map(text: &str, origin: &Path) -> anyhow::Result<Vec<MapEntry>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{line}", origin.display());
        let mut fields = raw.split('\t');
        let path = fields.next().unwrap_or_default();
        let Some(label_text) = fields.next() else {
            bail!(
                "{}: expected `<path>\\t<label>`, found no tab in {:?}",
                at(),
                raw
            );
        };
        let label: i64 = label_text.trim().parse().with_context(|| {
            format!("{}: label {:?} is not an integer", at(), label_text.trim())
        })?;
        if label < 0 || label > u32::MAX as i64 {
            bail!("{}: label {label} is negative or too large", at());
        }
        if path.is_empty() {
            bail!("{}: empty path", at());
        }
        if !has_image_extension(path) {
            bail!(
                "{}: {:?} does not have an image extension ({})",
                at(),
                path,
                IMG_EXTENSIONS.join(" ")
            );
        }
        entries.push(MapEntry {
            path: path.replace("ImageNet/", ""),
            label: label as u32,
            line,
        });
    }
    Ok(entries)
}

/// Reads and parses a map file.
pub fn read_map(path: &Path) -> anyhow::Result<Vec<MapEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read map file {}", path.display()))?;
    parse_map(&text, path)
}

/// The `<zip>@<member>` notation of the official `ZipReader`: split at the first `@`; the member is
/// stripped of leading and trailing `/`. Returns `None` when the path does not contain `.zip@`.
pub fn split_zip_style_path(path: &str) -> Option<(&str, &str)> {
    if !path.contains(".zip@") {
        return None;
    }
    let at = path.find('@')?;
    Some((&path[..at], path[at + 1..].trim_matches('/')))
}

/// The ImageNet wnid of a path: its first `/`-separated component that starts with `n` (the official
/// converter's rule), e.g. `n03146219` for `ImageNet/train/n03146219/x.JPEG`.
pub fn wnid_of(path: &str) -> Option<&str> {
    path.split('/').find(|c| c.starts_with('n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_lines_parse() {
        let text = "ImageNet/train/n03146219/n03146219_8050.JPEG\t0\nval/n01751748/ILSVRC2012_val_00000001.JPEG\t 1 \r\n\n";
        let e = parse_map(text, Path::new("m.txt")).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            MapEntry {
                path: "train/n03146219/n03146219_8050.JPEG".into(),
                label: 0,
                line: 1
            }
        );
        assert_eq!((e[1].label, e[1].line), (1, 2));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, needle) in [
            ("a.jpg\t0\nb.jpg 1\n", "m.txt:2"),
            ("a.jpg\tx\n", "not an integer"),
            ("a.jpg\t-1\n", "negative"),
            ("a.txt\t1\n", "image extension"),
        ] {
            let msg = format!("{:#}", parse_map(text, Path::new("m.txt")).err().unwrap());
            assert!(msg.contains(needle) && msg.contains("m.txt:"), "{msg}");
        }
    }

    #[test]
    fn zip_style_paths_split_at_first_at() {
        assert_eq!(
            split_zip_style_path("/d/train.zip@/train/n1/a@b.JPEG"),
            Some(("/d/train.zip", "train/n1/a@b.JPEG"))
        );
        assert_eq!(split_zip_style_path("/d/train/x.JPEG"), None);
        assert_eq!(
            wnid_of("ImageNet/train/n03146219/x.JPEG"),
            Some("n03146219")
        );
        assert_eq!(wnid_of("val/x.JPEG"), None);
    }
}
