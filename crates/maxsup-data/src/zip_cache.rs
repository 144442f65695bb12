//! The DeiT `--cache` dataset: images inside `<split>.zip`, labels from `<split>_map.txt`.
//!
//! Sample order is the map's paths sorted as strings (official behaviour); each path, with
//! `ImageNet/` removed, names a member of the zip. The archive is memory-mapped; with `cache` the
//! encoded bytes of this rank's shard (samples `i % world_size == rank`) are read into RAM up front,
//! exactly the samples the DeiT sampler will ask this rank for.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::dataset::{Dataset, RawSample};
use crate::decode::decode;
use crate::image::RgbImage;
use crate::map_file::{read_map, MapEntry};

/// How to open a zip cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipCacheOptions {
    /// Read this rank's encoded images into memory at open time (DeiT `--cache`).
    pub cache: bool,
    pub rank: usize,
    pub world_size: usize,
    /// Expected number of classes; labels must be below it. `None`: max label + 1.
    pub num_classes: Option<usize>,
    /// Accept classes in `0..num_classes` that have no sample (e.g. a partial map).
    pub allow_empty_classes: bool,
}

impl Default for ZipCacheOptions {
    fn default() -> Self {
        ZipCacheOptions {
            cache: false,
            rank: 0,
            world_size: 1,
            num_classes: None,
            allow_empty_classes: false,
        }
    }
}

/// A `Read + Seek` view of shared bytes, so a `ZipArchive` can own its reader.
#[derive(Clone)]
struct SharedCursor {
    bytes: Arc<memmap2::Mmap>,
    pos: u64,
}

impl Read for SharedCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let data = &self.bytes[..];
        let start = (self.pos as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SharedCursor {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let len = self.bytes.len() as i64;
        let new = match pos {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::End(d) => len + d,
            SeekFrom::Current(d) => self.pos as i64 + d,
        };
        if new < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

/// One sample: its zip member, label and map line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipSample {
    pub member: String,
    pub label: u32,
    pub map_line: usize,
    member_index: usize,
}

/// An ImageNet-style zip + map dataset.
pub struct ZipCache {
    zip_path: PathBuf,
    map_path: PathBuf,
    archive: zip::ZipArchive<SharedCursor>,
    samples: Vec<ZipSample>,
    num_classes: usize,
    options: ZipCacheOptions,
    /// With `cache`: encoded bytes of this rank's samples, `None` for other ranks' samples.
    cached: Option<Vec<Option<Vec<u8>>>>,
}

impl ZipCache {
    /// Opens `<root>/<split>.zip` with `<root>/<split>_map.txt` (the official layout).
    pub fn open_split(
        root: &Path,
        split: &str,
        options: ZipCacheOptions,
    ) -> anyhow::Result<ZipCache> {
        ZipCache::open(
            &root.join(format!("{split}.zip")),
            &root.join(format!("{split}_map.txt")),
            options,
        )
    }

    /// Opens a zip with its map file. Every map entry must name an existing member; errors name the
    /// map line and member.
    pub fn open(
        zip_path: &Path,
        map_path: &Path,
        options: ZipCacheOptions,
    ) -> anyhow::Result<ZipCache> {
        anyhow::ensure!(
            options.world_size > 0 && options.rank < options.world_size,
            "rank {} is not in 0..world_size {}",
            options.rank,
            options.world_size
        );
        let entries = read_map(map_path)?;
        let file = std::fs::File::open(zip_path)
            .with_context(|| format!("cannot open zip {}", zip_path.display()))?;
        // SAFETY: the archive is opened read-only; like every mmap-based reader we assume the file is
        // not truncated by another process while training.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", zip_path.display()))?;
        let cursor = SharedCursor {
            bytes: Arc::new(mmap),
            pos: 0,
        };
        let archive = zip::ZipArchive::new(cursor)
            .with_context(|| format!("{} is not a valid zip archive", zip_path.display()))?;
        let samples = resolve_samples(entries, zip_path, map_path, &archive)?;
        let num_classes = check_labels(&samples, map_path, &options)?;
        let mut ds = ZipCache {
            zip_path: zip_path.to_path_buf(),
            map_path: map_path.to_path_buf(),
            archive,
            samples,
            num_classes,
            options,
            cached: None,
        };
        if ds.options.cache {
            ds.fill_cache()?;
        }
        Ok(ds)
    }

    fn fill_cache(&mut self) -> anyhow::Result<()> {
        let (rank, world) = (self.options.rank, self.options.world_size);
        let mut cached = vec![None; self.samples.len()];
        for (i, slot) in cached.iter_mut().enumerate().skip(rank).step_by(world) {
            *slot = Some(self.read_member(i)?);
        }
        self.cached = Some(cached);
        Ok(())
    }

    /// Samples in dataset (sorted-path) order.
    pub fn samples(&self) -> &[ZipSample] {
        &self.samples
    }

    pub fn zip_path(&self) -> &Path {
        &self.zip_path
    }

    pub fn map_path(&self) -> &Path {
        &self.map_path
    }

    /// The encoded bytes of sample `index` (from the cache when enabled), CRC-checked.
    pub fn encoded(&self, index: usize) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            index < self.samples.len(),
            "index {index} out of range ({} samples)",
            self.samples.len()
        );
        match &self.cached {
            Some(c) => match &c[index] {
                Some(bytes) => Ok(bytes.clone()),
                None => bail!(
                    "sample {index} belongs to rank {} but this cache holds rank {} of {} (use the same \
                     rank/world_size in the loader)",
                    index % self.options.world_size,
                    self.options.rank,
                    self.options.world_size
                ),
            },
            None => self.read_member(index),
        }
    }

    fn read_member(&self, index: usize) -> anyhow::Result<Vec<u8>> {
        let s = &self.samples[index];
        let mut archive = self.archive.clone();
        let mut f = archive
            .by_index(s.member_index)
            .with_context(|| self.describe(index))?;
        // The declared size comes from the archive: trust it for the reservation only up to a
        // bound, and refuse members no image file reaches (a damaged or hostile header).
        let declared = f.size();
        if declared > MAX_MEMBER_BYTES {
            bail!(
                "{}: member declares {declared} bytes uncompressed, more than the {MAX_MEMBER_BYTES} an image may have (damaged archive?)",
                self.describe(index)
            );
        }
        let mut bytes = Vec::with_capacity((declared as usize).min(RESERVE_BYTES));
        f.read_to_end(&mut bytes)
            .with_context(|| format!("reading {} (corrupt zip member?)", self.describe(index)))?;
        Ok(bytes)
    }

    fn describe(&self, index: usize) -> String {
        let s = &self.samples[index];
        format!(
            "{}@{} ({}:{})",
            self.zip_path.display(),
            s.member,
            self.map_path.display(),
            s.map_line
        )
    }
}

/// Sorts the entries like the official dataset and finds each member in the archive.
fn resolve_samples(
    entries: Vec<MapEntry>,
    zip_path: &Path,
    map_path: &Path,
    archive: &zip::ZipArchive<SharedCursor>,
) -> anyhow::Result<Vec<ZipSample>> {
    // Official: full path "<dir>/<split>.zip@/<path>" sorted as strings; the common prefix makes this
    // the order of the paths themselves (Rust's byte order equals Python's code-point order).
    let mut entries = entries;
    entries.sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
    // A path listed twice would count its image twice (and may carry two labels): the official
    // maps list each file once, so a repeat is a damaged or concatenated map.
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        bail!(
            "{}:{}: {:?} is listed again (first at line {})",
            map_path.display(),
            w[1].line,
            w[1].path,
            w[0].line
        );
    }
    let prefix = format!("{}@/", zip_path.display());
    let mut samples = Vec::with_capacity(entries.len());
    for e in entries {
        let full = format!("{prefix}{}", e.path);
        let member = match crate::map_file::split_zip_style_path(&full) {
            Some((_, m)) => m.to_string(),
            None => e.path.trim_matches('/').to_string(),
        };
        let Some(member_index) = archive.index_for_name(&member) else {
            bail!(
                "{}:{}: member {:?} is not in {}",
                map_path.display(),
                e.line,
                member,
                zip_path.display()
            );
        };
        samples.push(ZipSample {
            member,
            label: e.label,
            map_line: e.line,
            member_index,
        });
    }
    Ok(samples)
}

/// Validates labels against the expected class count and returns the class count.
/// The largest zip member read as one sample.
const MAX_MEMBER_BYTES: u64 = crate::bounded_read::MAX_ENCODED_IMAGE_BYTES;
/// Up to this much of a member's declared size is reserved before reading.
const RESERVE_BYTES: usize = 64 << 20;

fn check_labels(
    samples: &[ZipSample],
    map_path: &Path,
    options: &ZipCacheOptions,
) -> anyhow::Result<usize> {
    anyhow::ensure!(
        !samples.is_empty(),
        "map file {} has no samples",
        map_path.display()
    );
    let max = samples.iter().map(|s| s.label).max().unwrap_or(0) as usize;
    let k = options.num_classes.unwrap_or(max + 1);
    if let Some(bad) = samples.iter().find(|s| s.label as usize >= k) {
        bail!(
            "{}:{}: label {} out of range 0..{k}",
            map_path.display(),
            bad.map_line,
            bad.label
        );
    }
    if !options.allow_empty_classes {
        // The first class without a sample, found from the labels present (never a table sized
        // by the largest label, which a garbage line can put near 2^32).
        let mut present: Vec<u32> = samples.iter().map(|s| s.label).collect();
        present.sort_unstable();
        present.dedup();
        let first_gap = present
            .iter()
            .enumerate()
            .find(|(i, &l)| l as usize != *i)
            .map(|(i, _)| i)
            .or((present.len() < k).then_some(present.len()));
        if let Some(empty) = first_gap {
            bail!(
                "{}: class {empty} has no samples (labels must cover 0..{k}; set allow_empty_classes for partial maps)",
                map_path.display()
            );
        }
    }
    Ok(k)
}

impl Dataset for ZipCache {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn label(&self, index: usize) -> u32 {
        self.samples[index].label
    }

    fn name(&self, index: usize) -> String {
        self.describe(index)
    }

    fn load(&self, index: usize) -> anyhow::Result<RgbImage> {
        let bytes = self.encoded(index)?;
        decode(&bytes).with_context(|| format!("decoding {}", self.describe(index)))
    }

    fn load_raw(&self, index: usize) -> anyhow::Result<RawSample> {
        self.encoded(index).map(RawSample::Encoded)
    }
}
