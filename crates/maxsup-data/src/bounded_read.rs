//! Whole-file reads with a size limit checked before anything is allocated: a file's size is
//! data like any other, and `std::fs::read` of a damaged or sparse multi-terabyte file aborts
//! the process on the allocation instead of reporting the file.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

/// The largest encoded image read as one sample (an ImageNet JPEG is under 20 MB); shared by
/// image files and zip members.
pub const MAX_ENCODED_IMAGE_BYTES: u64 = 1 << 30;

/// Reads `path` whole if it holds at most `max` bytes; `what` names the file's role in the
/// error ("image", "CIFAR-10 batch"). The read itself is bounded too, so a file that grows while
/// it is read cannot exceed the limit.
pub fn read_at_most(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > max {
        bail!(
            "{}: {len} bytes is more than a {what} may have ({max} bytes); damaged or not a {what}",
            path.display()
        );
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "{}: grew beyond {max} bytes while being read",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_by_name_before_it_is_read() {
        let dir = std::env::temp_dir().join(format!("maxsup-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.jpg");
        let f = std::fs::File::create(&path).unwrap();
        // Sparse: a terabyte that takes no disk and must take no memory.
        f.set_len(1 << 40).unwrap();
        let e = read_at_most(&path, MAX_ENCODED_IMAGE_BYTES, "image")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.jpg") && e.contains("1099511627776 bytes"),
            "{e}"
        );
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(read_at_most(&path, 3, "image").unwrap(), b"abc");
        assert!(read_at_most(&path, 2, "image").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
