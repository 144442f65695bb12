//! Checkpoints: every tensor of a run (model, optimizer, EMA, loss state) in one safetensors
//! file, with the scalar state (epoch, step, RNG, config) in its JSON metadata. Written atomically
//! (temp file, fsync, rename), so a run killed mid-write leaves the previous checkpoint intact.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{de::DeserializeOwned, Serialize};

/// The format tag stored in the metadata, checked on load.
pub const FORMAT: &str = "maxsup-checkpoint-v1";

/// The tensors of a checkpoint grouped by owner; names are prefixed `model/`, `optim/`, `ema/`,
/// `loss/` in the file.
#[derive(Debug, Default, Clone)]
pub struct CheckpointTensors {
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub ema: HashMap<String, Tensor>,
    pub loss: HashMap<String, Tensor>,
}

const GROUPS: [&str; 4] = ["model/", "optim/", "ema/", "loss/"];

impl CheckpointTensors {
    fn groups(&self) -> [&HashMap<String, Tensor>; 4] {
        [&self.model, &self.optimizer, &self.ema, &self.loss]
    }

    fn group_mut(&mut self, i: usize) -> &mut HashMap<String, Tensor> {
        match i {
            0 => &mut self.model,
            1 => &mut self.optimizer,
            2 => &mut self.ema,
            _ => &mut self.loss,
        }
    }
}

/// Writes `tensors` and `meta` (any serializable state) to `path` atomically.
pub fn save_checkpoint<M: Serialize>(
    path: &Path,
    tensors: &CheckpointTensors,
    meta: &M,
) -> Result<()> {
    let mut flat: Vec<(String, Tensor)> = Vec::new();
    for (prefix, group) in GROUPS.iter().zip(tensors.groups()) {
        for (name, t) in group {
            // Bring every tensor to host memory, contiguous, so serialization sees plain bytes.
            let t = t.to_device(&Device::Cpu)?.contiguous()?;
            flat.push((format!("{prefix}{name}"), t));
        }
    }
    flat.sort_by(|a, b| a.0.cmp(&b.0));
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("state".to_string(), serde_json::to_string(meta)?);
    let bytes = safetensors::serialize(flat.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .with_context(|| format!("serializing checkpoint {}", path.display()))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether `path` is a training checkpoint (rather than a plain weight file), from its
/// safetensors header alone: the tensors are not read.
pub fn is_training_checkpoint(path: &Path) -> bool {
    let read_header = || -> Option<Vec<u8>> {
        let mut file = fs::File::open(path).ok()?;
        let mut len = [0u8; 8];
        std::io::Read::read_exact(&mut file, &mut len).ok()?;
        let len = usize::try_from(u64::from_le_bytes(len))
            .ok()
            .filter(|&n| n <= 100 << 20)?;
        let mut header = vec![0u8; len];
        std::io::Read::read_exact(&mut file, &mut header).ok()?;
        Some(header)
    };
    let Some(header) = read_header() else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|h| {
            h.get("__metadata__")?
                .get("format")?
                .as_str()
                .map(|f| f == FORMAT)
        })
        .unwrap_or(false)
}

/// Reads a checkpoint written by [`save_checkpoint`]: its tensors on `device` and its state.
pub fn load_checkpoint<M: DeserializeOwned>(
    path: &Path,
    device: &Device,
) -> Result<(CheckpointTensors, M)> {
    // Mapped, not read: the file's size is whatever is on disk (a damaged or sparse file must
    // give an error, not an allocation failure), and safetensors parses its header first.
    let file =
        fs::File::open(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    // SAFETY: the map is read-only and lives only while this function parses it; a checkpoint
    // is replaced by rename (`write_atomically`), never rewritten in place, so the mapped file
    // does not change under it.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("reading checkpoint {}", path.display()))?;
    let bytes: &[u8] = &map;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    match metadata.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(other) => bail!("{}: checkpoint format `{other}`, expected `{FORMAT}`", path.display()),
        None => bail!(
            "{} is not a training checkpoint (no `format` metadata); plain weight files load with --weights",
            path.display()
        ),
    }
    let state_json = metadata
        .get("state")
        .with_context(|| format!("{}: metadata has no `state`", path.display()))?;
    let state: M = serde_json::from_str(state_json)
        .with_context(|| format!("{}: cannot parse the checkpoint state", path.display()))?;
    let all = candle_core::safetensors::load_buffer(bytes, device)
        .with_context(|| format!("loading tensors of {}", path.display()))?;
    let mut tensors = CheckpointTensors::default();
    for (name, t) in all {
        let Some(i) = GROUPS.iter().position(|p| name.starts_with(p)) else {
            bail!(
                "{}: tensor `{name}` belongs to no known group",
                path.display()
            );
        };
        tensors
            .group_mut(i)
            .insert(name[GROUPS[i].len()..].to_string(), t);
    }
    Ok((tensors, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Meta {
        epoch: usize,
        note: String,
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let mut tensors = CheckpointTensors::default();
        tensors.model.insert(
            "fc.weight".into(),
            Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap(),
        );
        tensors.loss.insert(
            "ols.next_count".into(),
            Tensor::new(&[5f32], &Device::Cpu).unwrap(),
        );
        save_checkpoint(
            &path,
            &tensors,
            &Meta {
                epoch: 3,
                note: "a".into(),
            },
        )
        .unwrap();
        save_checkpoint(
            &path,
            &tensors,
            &Meta {
                epoch: 4,
                note: "b".into(),
            },
        )
        .unwrap();
        assert!(is_training_checkpoint(&path));
        let (back, meta): (CheckpointTensors, Meta) = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(
            meta,
            Meta {
                epoch: 4,
                note: "b".into()
            }
        );
        assert_eq!(
            back.model["fc.weight"].to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert_eq!(
            back.loss["ols.next_count"].to_vec1::<f32>().unwrap(),
            vec![5.0]
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.safetensors");
        fs::write(&path, b"not a checkpoint").unwrap();
        assert!(!is_training_checkpoint(&path));
        let err = format!(
            "{:#}",
            load_checkpoint::<Meta>(&path, &Device::Cpu).unwrap_err()
        );
        assert!(err.contains("garbage.safetensors"), "{err}");
        let missing = dir.path().join("missing.safetensors");
        let err = format!(
            "{:#}",
            load_checkpoint::<Meta>(&missing, &Device::Cpu).unwrap_err()
        );
        assert!(err.contains("missing.safetensors"), "{err}");
    }
}
