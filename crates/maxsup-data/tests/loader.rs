//! Loader: determinism across thread counts, shuffling, drop_last, sharding, prefetching, stall time,
//! error propagation and skip_corrupt.

use std::sync::Arc;

use maxsup_data::{
    BatchImages, Dataset, Interpolation, Loader, LoaderConfig, Mixup, Pipeline, RgbImage,
};

/// 48x40 synthetic images whose pixels encode the index; `broken` indices fail to load,
/// `panics` ones panic (a bug in a decoder, say).
struct Synthetic {
    n: usize,
    broken: Vec<usize>,
    panics: Vec<usize>,
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.n
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn label(&self, index: usize) -> u32 {
        (index % 10) as u32
    }
    fn name(&self, index: usize) -> String {
        format!("synthetic/{index}.jpg")
    }
    fn load(&self, index: usize) -> anyhow::Result<RgbImage> {
        anyhow::ensure!(
            !self.broken.contains(&index),
            "corrupt JPEG in synthetic/{index}.jpg"
        );
        assert!(
            !self.panics.contains(&index),
            "decoder bug on synthetic/{index}.jpg"
        );
        let data = (0..48 * 40 * 3)
            .map(|p| ((p * 7 + index * 13) % 256) as u8)
            .collect();
        RgbImage::new(48, 40, data)
    }
}

fn loader(n: usize, cfg: LoaderConfig) -> Loader {
    let ds = Arc::new(Synthetic {
        n,
        broken: vec![],
        panics: vec![],
    });
    Loader::new(
        ds,
        Pipeline::imagenet_train(24, Interpolation::Bicubic),
        cfg,
    )
    .unwrap()
}

fn collect(l: &Loader, epoch: u64) -> Vec<maxsup_data::Batch> {
    l.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn identical_batches_for_any_thread_count() {
    let mut one = LoaderConfig::train(8, 42);
    one.num_threads = 1;
    let mut three = one.clone();
    three.num_threads = 3;
    three.prefetch = 1;
    let a = collect(&loader(37, one.clone()), 2);
    let b = collect(&loader(37, three), 2);
    assert_eq!(a, b);
    assert_eq!(a.len(), 4); // drop_last: 37 / 8
                            // A different epoch reshuffles and re-augments.
    let c = collect(&loader(37, one), 3);
    assert_ne!(a[0].indices, c[0].indices);
}

#[test]
fn shuffle_covers_shard_and_eval_is_sequential() {
    let l = loader(37, LoaderConfig::train(8, 1));
    let mut seen: Vec<usize> = collect(&l, 0)
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_eq!(seen.len(), 32);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 32);

    let e = loader(37, LoaderConfig::eval(8));
    let batches = collect(&e, 0);
    assert_eq!(batches.len(), 5);
    assert_eq!(batches[4].indices, vec![32, 33, 34, 35, 36]);
    assert_eq!(batches[4].shape, [5, 3, 24, 24]);
    assert_eq!(batches[4].labels, vec![2, 3, 4, 5, 6]);
    assert_eq!(batches[0].images.len(), 8 * 3 * 24 * 24);
}

#[test]
fn shards_partition_the_dataset_like_deit() {
    let mut all = Vec::new();
    for rank in 0..3 {
        let l = loader(20, LoaderConfig::eval(4).with_shard(rank, 3));
        let idx: Vec<usize> = collect(&l, 0)
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect();
        assert!(idx.iter().all(|i| i % 3 == rank));
        all.extend(idx);
    }
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
}

/// Training shards run the same number of steps on every rank whatever the dataset size, world
/// size and batch (an unequal count would leave the other ranks waiting in a collective).
#[test]
fn every_rank_trains_the_same_number_of_steps() {
    for n in [1usize, 7, 20, 37, 64, 101] {
        for world in [1usize, 2, 3, 4, 8] {
            for batch in [1usize, 2, 4, 5, 8] {
                let interleaved: Vec<usize> = (0..world)
                    .map(|r| {
                        let l = loader(n, LoaderConfig::train(batch, 1).with_shard(r, world));
                        let batches = collect(&l, 0);
                        assert!(batches.iter().all(|b| b.len() == batch));
                        assert!(batches
                            .iter()
                            .flat_map(|b| b.indices.clone())
                            .all(|i| i % world == r));
                        assert_eq!(batches.len(), l.batches_per_epoch());
                        batches.len()
                    })
                    .collect();
                assert!(
                    interleaved.iter().all(|&s| s == (n / world) / batch),
                    "interleaved n {n} world {world} batch {batch}: {interleaved:?}"
                );
                if batch % world == 0 {
                    let global: Vec<usize> = (0..world)
                        .map(|r| {
                            let cfg =
                                LoaderConfig::train(batch, 1).with_global_batch_part(r, world);
                            loader(n, cfg).batches_per_epoch()
                        })
                        .collect();
                    assert!(global.iter().all(|&s| s == n / batch), "global {global:?}");
                }
            }
        }
    }
}

#[test]
fn global_batch_parts_are_the_single_process_batches_for_any_world_size() {
    for (n, batch) in [(37, 8), (20, 4), (64, 16)] {
        let single = collect(&loader(n, LoaderConfig::train(batch, 3)), 1);
        for world in [2, 4] {
            let parts: Vec<Vec<maxsup_data::Batch>> = (0..world)
                .map(|r| {
                    let cfg = LoaderConfig::train(batch, 3).with_global_batch_part(r, world);
                    collect(&loader(n, cfg), 1)
                })
                .collect();
            for p in &parts {
                assert_eq!(
                    p.len(),
                    n / batch,
                    "every rank runs the same number of steps"
                );
            }
            for (b, whole) in single.iter().enumerate() {
                let mut indices = vec![];
                let mut images = vec![];
                for p in &parts {
                    assert_eq!(p[b].len(), batch / world);
                    indices.extend(p[b].indices.clone());
                    images.extend_from_slice(&p[b].normalized_images());
                }
                assert_eq!(
                    indices, whole.indices,
                    "n {n} batch {batch} world {world} step {b}"
                );
                assert_eq!(
                    images,
                    whole.normalized_images().into_owned(),
                    "same augmentations whatever the world size"
                );
            }
        }
    }
    let e = Loader::new(
        Arc::new(Synthetic {
            n: 8,
            broken: vec![],
            panics: vec![],
        }),
        Pipeline::imagenet_train(24, Interpolation::Bicubic),
        LoaderConfig::train(6, 0).with_global_batch_part(0, 4),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("global batch of 6 is not divisible by the 4 processes"),
        "{e}"
    );
}

#[test]
fn same_sample_same_augmentation_regardless_of_batch_position() {
    // Per-sample generators depend on (seed, epoch, index) only.
    let l = loader(16, LoaderConfig::train(4, 5));
    let b = l.make_batch(1, 0, &[3, 7]).unwrap();
    let c = l.make_batch(1, 9, &[7, 3]).unwrap();
    let per = b.image_len();
    assert_eq!(b.normalized_images()[..per], c.normalized_images()[per..]);
}

#[test]
fn errors_stop_the_epoch_and_name_the_sample() {
    let ds = Arc::new(Synthetic {
        n: 12,
        broken: vec![5],
        panics: vec![],
    });
    let l = Loader::new(
        ds.clone(),
        Pipeline::imagenet_eval(16, 0.875, Interpolation::Bilinear),
        LoaderConfig::eval(4),
    )
    .unwrap();
    let results: Vec<_> = l.epoch(0).collect();
    assert_eq!(results.len(), 2);
    let msg = format!("{:#}", results[1].as_ref().err().unwrap());
    assert!(
        msg.contains("synthetic/5.jpg") && msg.contains("sample 5"),
        "{msg}"
    );

    let mut cfg = LoaderConfig::eval(4);
    cfg.skip_corrupt = true;
    let l = Loader::new(
        ds,
        Pipeline::imagenet_eval(16, 0.875, Interpolation::Bilinear),
        cfg,
    )
    .unwrap();
    let mut it = l.epoch(0);
    let batches: Vec<_> = it.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(batches[1].indices, vec![4, 6, 7]);
    assert_eq!(batches[1].images.len(), 3 * 3 * 16 * 16);
    assert_eq!(it.skipped(), 1);
}

#[test]
fn stall_time_is_measured_and_early_drop_is_clean() {
    let l = loader(64, LoaderConfig::train(8, 0));
    let mut it = l.epoch(0);
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.len(), 8);
    assert!(it.stall_time() > std::time::Duration::ZERO);
    drop(it); // must not hang with a full queue
}

#[test]
fn mixup_batches_carry_soft_targets() {
    let l = loader(16, LoaderConfig::train(8, 0))
        .with_mixup(Mixup::deit(10, 0.0))
        .unwrap();
    let b = collect(&l, 0);
    let t = b[0].soft_targets.as_ref().unwrap();
    assert_eq!(t.len(), 8 * 10);
    for row in t.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    assert_eq!(b, collect(&l, 0));
}

#[test]
fn a_panic_while_loading_is_an_error_not_the_end_of_the_epoch() {
    let ds = Arc::new(Synthetic {
        n: 32,
        broken: vec![],
        panics: vec![20],
    });
    let mut cfg = LoaderConfig::eval(8);
    cfg.num_threads = 2;
    let l = Loader::new(
        ds,
        Pipeline::imagenet_train(24, Interpolation::Bicubic),
        cfg,
    )
    .unwrap();
    let results: Vec<_> = l.epoch(0).collect();
    assert_eq!(
        results.len(),
        3,
        "two good batches, then the error, then nothing"
    );
    assert!(results[0].is_ok() && results[1].is_ok());
    let err = format!("{:#}", results[2].as_ref().unwrap_err());
    assert!(
        err.contains("prefetch thread failed with 2 batches of the epoch left"),
        "{err}"
    );
    assert!(err.contains("decoder bug on synthetic/20.jpg"), "{err}");
}

#[test]
fn pixel_batches_normalize_to_the_normalized_batches_bit_for_bit() {
    // RandAugment and colour jitter run on the 8-bit image, so they stay in the pixel path;
    // a corrupt sample is skipped the same way in both.
    let pipeline = Pipeline {
        randaugment: Some(maxsup_data::RandAugment::deit()),
        color_jitter: Some(maxsup_data::ColorJitter::uniform(0.4)),
        ..Pipeline::imagenet_train(24, Interpolation::Bicubic)
    };
    let make = |pixels: bool| {
        let ds = Arc::new(Synthetic {
            n: 20,
            broken: vec![3],
            panics: vec![],
        });
        let cfg = LoaderConfig {
            pixels,
            skip_corrupt: true,
            ..LoaderConfig::train(6, 11)
        };
        Loader::new(ds, pipeline.clone(), cfg).unwrap()
    };
    let (normalized, pixels) = (collect(&make(false), 2), collect(&make(true), 2));
    assert_eq!(normalized.len(), pixels.len());
    for (n, p) in normalized.iter().zip(&pixels) {
        let BatchImages::Pixels { values, mean, std } = &p.images else {
            panic!("expected 8-bit pixels");
        };
        assert_eq!((*mean, *std), (pipeline.mean, pipeline.std));
        assert_eq!(values.len(), n.images.len());
        assert_eq!(
            (&p.indices, &p.labels, p.shape),
            (&n.indices, &n.labels, n.shape)
        );
        let (a, b) = (n.normalized_images(), p.normalized_images());
        assert!(a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    assert!(
        normalized.iter().any(|b| b.len() == 5),
        "the corrupt sample was skipped"
    );
}

#[test]
fn pixel_batches_refuse_what_needs_normalized_values() {
    let ds = || {
        Arc::new(Synthetic {
            n: 8,
            broken: vec![],
            panics: vec![],
        })
    };
    let cfg = LoaderConfig {
        pixels: true,
        ..LoaderConfig::train(4, 0)
    };
    let erasing = Pipeline::deit_train(24);
    let e = Loader::new(ds(), erasing, cfg.clone()).err().unwrap();
    assert!(format!("{e:#}").contains("random erasing"), "{e:#}");
    let l = Loader::new(
        ds(),
        Pipeline::imagenet_train(24, Interpolation::Bicubic),
        cfg,
    )
    .unwrap();
    let e = l.with_mixup(Mixup::deit(10, 0.0)).err().unwrap();
    assert!(format!("{e:#}").contains("8-bit pixels"), "{e:#}");
}
