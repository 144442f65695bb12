//! PyTorch `.pth` import via `candle_core::pickle` (zip-format `torch.save`, torch >= 1.6).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use super::state_dict::load_state_dict;
use crate::params::ParamStore;

/// Where checkpoints keep the state dict: at the top level (torchvision, `torch.save(model.
/// state_dict())`), or under one of these keys (timm/DeiT `model`, Lightning and many training
/// scripts `state_dict`).
const NESTED_KEYS: [&str; 4] = ["state_dict", "model", "model_state_dict", "module"];

/// Reads the tensors of a `.pth` checkpoint, finding the state dict at the top level or under
/// `state_dict` / `model` / `model_state_dict` / `module`. Names are returned as stored (a DDP
/// `module.` prefix is stripped later by [`load_state_dict`]).
pub fn read_pth_state_dict(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    match candle_core::pickle::read_all_with_key(path, None) {
        Ok(_) => read_readable(path),
        // The zip reader inside candle rejects some valid `torch.save` archives (e.g. one whose
        // record names are 21 characters plus padding: "Invalid Central Directory header").
        // Those are rewritten, entry for entry, to a temporary archive it does read.
        Err(first) if is_archive_error(&first) => {
            let copy = RepackedArchive::new(path).with_context(|| {
                format!("reading PyTorch checkpoint {} ({first})", path.display())
            })?;
            read_readable(copy.path())
                .with_context(|| format!("reading PyTorch checkpoint {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading PyTorch checkpoint {} (only the zip format of torch >= 1.6 is supported; re-save legacy files with torch.save)", path.display())),
    }
}

fn is_archive_error(e: &candle_core::Error) -> bool {
    let text = e.to_string();
    text.contains("Zip") || text.contains("zip") || text.contains("Central Directory")
}

/// A copy of a zip archive written by the `zip` crate (stored entries, same names), removed on drop.
struct RepackedArchive {
    path: std::path::PathBuf,
}

impl RepackedArchive {
    fn new(src: &Path) -> Result<Self> {
        use std::io::{Read, Write};
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stem = src
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let path =
            std::env::temp_dir().join(format!("maxsup-pth-{}-{n}-{stem}.pth", std::process::id()));
        let copy = Self { path };
        let mut archive = zip::ZipArchive::new(std::fs::File::open(src)?)
            .with_context(|| format!("{} is not a zip archive", src.display()))?;
        let mut out = zip::ZipWriter::new(std::fs::File::create(&copy.path)?);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        let mut buf = Vec::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i)?;
            if entry.is_dir() {
                continue;
            }
            buf.clear();
            entry
                .read_to_end(&mut buf)
                .with_context(|| format!("{}: reading member {}", src.display(), entry.name()))?;
            out.start_file(entry.name(), options)?;
            out.write_all(&buf)?;
        }
        out.finish()?;
        Ok(copy)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RepackedArchive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The state dict of an archive candle's reader accepts.
fn read_readable(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let top = candle_core::pickle::read_all_with_key(path, None)
        .with_context(|| format!("reading PyTorch checkpoint {} (only the zip format of torch >= 1.6 is supported; re-save legacy files with torch.save)", path.display()))?;
    if !top.is_empty() {
        return Ok(top);
    }
    for key in NESTED_KEYS {
        // A missing key is an error in candle; it just means "try the next layout".
        if let Ok(t) = candle_core::pickle::read_all_with_key(path, Some(key)) {
            if !t.is_empty() {
                return Ok(t);
            }
        }
    }
    bail!(
        "{}: found no tensors at the top level nor under any of the keys {:?}",
        path.display(),
        NESTED_KEYS
    )
}

/// Strict import of a `.pth` state dict into the model (see [`load_state_dict`]).
pub fn load_pth(params: &ParamStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = read_pth_state_dict(path)?;
    load_state_dict(params, tensors, &path.display().to_string())
}
