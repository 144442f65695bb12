//! The parallel, deterministic, prefetching batch loader.
//!
//! * Decoding and augmentation of a batch run in parallel on a rayon pool (all cores by default).
//! * A background thread assembles batches ahead of the consumer into a bounded queue, so loading
//!   overlaps training; [`EpochBatches::stall_time`] reports how long the consumer waited anyway.
//! * Determinism: sample `i` of epoch `e` is augmented with a generator derived from `(seed, e, i)`
//!   alone, and the epoch order from `(seed, e, rank)`, so batches are identical for any thread count.
//! * Sharding ([`Sharding`]): either the DeiT zip-cache sampler (rank `r` of `W` owns samples
//!   `i % W == r`, shuffled per epoch; evaluation and `--cache`), or one global order cut into
//!   global batches, each split among the ranks, so that a step trains on the same samples with
//!   the same augmentations whatever the number of processes (data-parallel training).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rayon::prelude::*;

use crate::batch::{Batch, BatchImages};
use crate::dataset::{Dataset, RawSample};
use crate::mixup::Mixup;
use crate::pipeline::Pipeline;
use crate::rng::{Rng, Stream};

/// How the samples are divided among the processes of a distributed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sharding {
    /// Rank `r` of `W` owns samples `i` with `i % W == r`; `batch_size` is per rank. DeiT's
    /// zip-cache sampler (each rank caches only its part, and shuffles it) and sharded
    /// evaluation. With `drop_last` (training) every rank runs `floor(N / W) / batch_size`
    /// steps, the count of the smallest shard, so that no rank waits for another in a
    /// collective that never comes.
    #[default]
    Interleaved,
    /// One order for all ranks (that of a single process); global batch `b` is samples
    /// `b * batch_size ..` of it and rank `r` takes the `r`-th of `W` equal contiguous parts.
    /// `batch_size` is the global batch and must be divisible by `W`; every rank runs the same
    /// number of steps (an unequal count would leave the others waiting in a collective).
    GlobalBatch,
}

/// How batches are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Reshuffle the shard every epoch (training).
    pub shuffle: bool,
    /// Drop the last incomplete batch (training).
    pub drop_last: bool,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
    pub sharding: Sharding,
    /// Batches prepared ahead of the consumer (queue depth, at least 1).
    pub prefetch: usize,
    /// Decode/augment threads; 0 = one per core.
    pub num_threads: usize,
    /// Skip (and count) samples that fail to load instead of failing the epoch. Batches with skipped
    /// samples are smaller than `batch_size`; nothing is substituted for them.
    pub skip_corrupt: bool,
    /// Hand out the 8-bit pixels ([`BatchImages::Pixels`]) instead of normalized `f32`, for a
    /// GPU that normalizes them itself (a quarter of the bytes to copy). Needs a pipeline
    /// without random erasing and no Mixup/CutMix, which work on the normalized values.
    pub pixels: bool,
}

impl LoaderConfig {
    /// Shuffled, drop_last, single process.
    pub fn train(batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed,
            rank: 0,
            world_size: 1,
            sharding: Sharding::Interleaved,
            prefetch: 4,
            num_threads: 0,
            skip_corrupt: false,
            pixels: false,
        }
    }

    /// Sequential order, keeps the last partial batch.
    pub fn eval(batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            ..LoaderConfig::train(batch_size, 0)
        }
    }

    /// This process's shard of a distributed run ([`Sharding::Interleaved`]).
    pub fn with_shard(mut self, rank: usize, world_size: usize) -> LoaderConfig {
        self.rank = rank;
        self.world_size = world_size;
        self
    }

    /// This process's part of every global batch ([`Sharding::GlobalBatch`]).
    pub fn with_global_batch_part(mut self, rank: usize, world_size: usize) -> LoaderConfig {
        self.rank = rank;
        self.world_size = world_size;
        self.sharding = Sharding::GlobalBatch;
        self
    }
}

/// Turns a dataset and a per-sample pipeline into batches, epoch by epoch.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    pipeline: Arc<Pipeline>,
    mixup: Option<Arc<Mixup>>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl Loader {
    pub fn new(
        dataset: Arc<dyn Dataset>,
        pipeline: Pipeline,
        config: LoaderConfig,
    ) -> anyhow::Result<Loader> {
        anyhow::ensure!(config.batch_size > 0, "batch_size must be positive");
        anyhow::ensure!(
            config.world_size > 0 && config.rank < config.world_size,
            "rank {} is not in 0..world_size {}",
            config.rank,
            config.world_size
        );
        anyhow::ensure!(
            config.sharding == Sharding::Interleaved
                || config.batch_size.is_multiple_of(config.world_size),
            "the global batch of {} is not divisible by the {} processes (each takes an equal part)",
            config.batch_size,
            config.world_size
        );
        anyhow::ensure!(
            !config.pixels || pipeline.has_pixel_output(),
            "the loader cannot hand out 8-bit pixels: its pipeline ends with random erasing, which works on normalized values"
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.num_threads)
            .thread_name(|i| format!("maxsup-data-{i}"))
            .build()
            .context("cannot start the loader's thread pool")?;
        Ok(Loader {
            dataset,
            pipeline: Arc::new(pipeline),
            mixup: None,
            config,
            pool: Arc::new(pool),
        })
    }

    /// Mixes every batch with Mixup/CutMix (training); batches then carry `soft_targets`.
    pub fn with_mixup(mut self, mixup: Mixup) -> anyhow::Result<Loader> {
        anyhow::ensure!(
            mixup.num_classes == self.dataset.num_classes(),
            "Mixup is configured for {} classes but the dataset has {}",
            mixup.num_classes,
            self.dataset.num_classes()
        );
        anyhow::ensure!(
            !self.config.pixels,
            "Mixup/CutMix mixes normalized images: it does not apply to a loader that hands out 8-bit pixels"
        );
        self.mixup = Some(Arc::new(mixup));
        Ok(self)
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The sample indices this rank draws from: `rank, rank + W, rank + 2W, ...` when
    /// interleaved; every index with [`Sharding::GlobalBatch`] (the rank's part of each batch is
    /// cut from the common order).
    pub fn shard_indices(&self) -> Vec<usize> {
        match self.config.sharding {
            Sharding::Interleaved => (self.config.rank..self.dataset.len())
                .step_by(self.config.world_size)
                .collect(),
            Sharding::GlobalBatch => (0..self.dataset.len()).collect(),
        }
    }

    /// The sample order of `epoch` on this rank (the common order with
    /// [`Sharding::GlobalBatch`], which a single process also draws).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.shard_indices();
        let stream_rank = match self.config.sharding {
            Sharding::Interleaved => self.config.rank as u64,
            Sharding::GlobalBatch => 0,
        };
        if self.config.shuffle {
            Rng::derive(self.config.seed, epoch, stream_rank, Stream::Shuffle).shuffle(&mut order);
        }
        order
    }

    /// Batches per epoch on this rank: the same on every rank when training (`drop_last`), for
    /// either sharding; when evaluating, interleaved shards may differ by one batch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.config.drop_last {
            let n = match self.config.sharding {
                Sharding::Interleaved => self.dataset.len() / self.config.world_size,
                Sharding::GlobalBatch => self.dataset.len(),
            };
            n / self.config.batch_size
        } else {
            self.shard_indices().len().div_ceil(self.config.batch_size)
        }
    }

    /// The samples this rank loads for batch `b` of an epoch in `order`.
    fn batch_part<'a>(config: &LoaderConfig, order: &'a [usize], b: usize) -> &'a [usize] {
        let bs = config.batch_size;
        let global = &order[b * bs..((b + 1) * bs).min(order.len())];
        match config.sharding {
            Sharding::Interleaved => global,
            Sharding::GlobalBatch => {
                let (w, r, n) = (config.world_size, config.rank, global.len());
                &global[r * n / w..(r + 1) * n / w]
            }
        }
    }

    /// Starts a background thread that produces the batches of `epoch` into a bounded queue.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        let order = self.epoch_order(epoch);
        let n_batches = self.batches_per_epoch();
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let skipped = Arc::new(AtomicUsize::new(0));
        let worker = BatchMaker {
            dataset: self.dataset.clone(),
            pipeline: self.pipeline.clone(),
            mixup: self.mixup.clone(),
            config: self.config.clone(),
            pool: self.pool.clone(),
            skipped: skipped.clone(),
        };
        let config = self.config.clone();
        let handle = std::thread::Builder::new()
            .name("maxsup-data-prefetch".into())
            .spawn(move || {
                for b in 0..n_batches {
                    let indices = Loader::batch_part(&config, &order, b);
                    let result = worker.make(epoch, b as u64, indices);
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return; // consumer gone, or the epoch ended with an error
                    }
                }
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        EpochBatches {
            rx: Some(rx),
            handle: Some(handle),
            stall: Duration::ZERO,
            skipped,
            remaining: n_batches,
        }
    }

    /// Builds one batch synchronously (no prefetching): the same bytes `epoch()` would produce for
    /// these indices at position `batch_index`.
    pub fn make_batch(
        &self,
        epoch: u64,
        batch_index: u64,
        indices: &[usize],
    ) -> anyhow::Result<Batch> {
        BatchMaker {
            dataset: self.dataset.clone(),
            pipeline: self.pipeline.clone(),
            mixup: self.mixup.clone(),
            config: self.config.clone(),
            pool: self.pool.clone(),
            skipped: Arc::new(AtomicUsize::new(0)),
        }
        .make(epoch, batch_index, indices)
    }
}

/// Everything the prefetch thread needs, detached from the `Loader`.
struct BatchMaker {
    dataset: Arc<dyn Dataset>,
    pipeline: Arc<Pipeline>,
    mixup: Option<Arc<Mixup>>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    skipped: Arc<AtomicUsize>,
}

impl BatchMaker {
    fn make(&self, epoch: u64, batch_index: u64, indices: &[usize]) -> anyhow::Result<Batch> {
        let pipeline = &self.pipeline;
        let (images, kept) = if self.config.pixels {
            let (values, kept) = self.transform_all(epoch, indices, |raw, rng, out| {
                pipeline.apply_raw_pixels_into(raw, rng, out)
            })?;
            let (mean, std) = (pipeline.mean, pipeline.std);
            (BatchImages::Pixels { values, mean, std }, kept)
        } else {
            let (values, kept) = self.transform_all(epoch, indices, |raw, rng, out| {
                pipeline.apply_raw_into(raw, rng, out)
            })?;
            (BatchImages::Normalized(values), kept)
        };
        let seed = self.config.seed;
        let indices: Vec<usize> = kept.iter().map(|&k| indices[k]).collect();
        let labels: Vec<u32> = indices.iter().map(|&i| self.dataset.label(i)).collect();
        let size = self.pipeline.output_size();
        let mut batch = Batch {
            images,
            shape: [indices.len(), 3, size, size],
            labels,
            soft_targets: None,
            num_classes: self.dataset.num_classes(),
            indices,
        };
        if let Some(mixup) = &self.mixup {
            let mut rng = Rng::derive(
                seed,
                epoch,
                (batch_index << 16) | self.config.rank as u64,
                Stream::Batch,
            );
            mixup.apply(&mut batch, &mut rng)?;
        }
        Ok(batch)
    }
}

impl BatchMaker {
    /// Transforms the samples `indices` in parallel into one buffer of `sample_len()` values
    /// each, with `transform`; returns it and the batch positions it holds (all of them, unless
    /// `skip_corrupt` dropped samples that failed to load).
    fn transform_all<T: Copy + Default + Send>(
        &self,
        epoch: u64,
        indices: &[usize],
        transform: impl Fn(&RawSample, &mut Rng, &mut [T]) -> anyhow::Result<()> + Sync,
    ) -> anyhow::Result<(Vec<T>, Vec<usize>)> {
        let per = self.pipeline.sample_len();
        let mut values = vec![T::default(); indices.len() * per];
        let seed = self.config.seed;
        let results: Vec<anyhow::Result<()>> = self.pool.install(|| {
            values
                .par_chunks_mut(per)
                .zip(indices.par_iter())
                .map(|(out, &i)| {
                    let mut rng = Rng::derive(seed, epoch, i as u64, Stream::Sample);
                    let raw = self.dataset.load_raw(i)?;
                    transform(&raw, &mut rng, out)
                        .with_context(|| format!("decoding/transforming {}", self.dataset.name(i)))
                })
                .collect()
        });
        let mut kept = Vec::with_capacity(indices.len());
        for (k, (r, &i)) in results.into_iter().zip(indices).enumerate() {
            match r {
                Ok(()) => kept.push(k),
                Err(_) if self.config.skip_corrupt => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e.context(format!("loading sample {i} of epoch {epoch}"))),
            }
        }
        if kept.len() < indices.len() {
            let mut compact = Vec::with_capacity(kept.len() * per);
            for &k in &kept {
                compact.extend_from_slice(&values[k * per..(k + 1) * per]);
            }
            values = compact;
        }
        Ok((values, kept))
    }
}

/// The batches of one epoch, produced in the background. Dropping it stops the producer.
pub struct EpochBatches {
    rx: Option<Receiver<anyhow::Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stall: Duration,
    skipped: Arc<AtomicUsize>,
    remaining: usize,
}

impl EpochBatches {
    /// Total time `next()` spent waiting for a batch that was not ready yet: the training step's
    /// input stall. Near zero means loading keeps up with the model.
    pub fn stall_time(&self) -> Duration {
        self.stall
    }

    /// Samples skipped so far because they failed to load (only with `skip_corrupt`).
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Iterator for EpochBatches {
    type Item = anyhow::Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let start = Instant::now();
        let received = self.rx.as_ref()?.recv();
        self.stall += start.elapsed();
        match received {
            Ok(Ok(batch)) => {
                self.remaining -= 1;
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                Some(Err(e))
            }
            // The producer is gone before the epoch's last batch: it panicked (a closed channel
            // must not read as the end of the epoch).
            Err(_) => {
                let missing = std::mem::take(&mut self.remaining);
                let why = match self.handle.take().map(JoinHandle::join) {
                    Some(Err(panic)) => panic_message(panic.as_ref()),
                    _ => "it stopped without an error".to_string(),
                };
                Some(Err(anyhow::anyhow!(
                    "the data loader's prefetch thread failed with {missing} batches of the epoch left: {why}"
                )))
            }
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic with a non-text payload".to_string()
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.rx.take(); // unblocks a producer waiting on a full queue
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
