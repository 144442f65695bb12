//! Zip cache + map files in the official format, the ImageFolder -> zip converter, and bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxsup_data::decode_image as decode;
use maxsup_data::{
    build_zip_from_folder, BatchImages, ClassIndexConverter, Dataset, ImageFolder, Interpolation,
    Loader, LoaderConfig, Pipeline, ZipCache, ZipCacheOptions,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxsup-zip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn put(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// ROOT/{train,val}/<wnid>/... with real JPEG/PNG fixtures (CMYK and grayscale included).
fn make_tree(root: &Path) {
    put(
        &root.join("train/n02000000/b.JPEG"),
        &fixture("photo_baseline.jpg"),
    );
    put(&root.join("train/n02000000/a.jpeg"), &fixture("cmyk.jpg"));
    put(
        &root.join("train/n01000000/sub/c.png"),
        &fixture("rgba.png"),
    );
    put(&root.join("train/n01000000/notes.txt"), b"not an image");
    put(
        &root.join("train/n03000000/d.jpg"),
        &fixture("photo_progressive.jpg"),
    );
    put(&root.join("val/n01000000/v1.JPEG"), &fixture("gray.jpg"));
    put(
        &root.join("val/n02000000/v2.JPEG"),
        &fixture("photo_baseline.jpg"),
    );
    put(
        &root.join("val/n03000000/v3.JPEG"),
        &fixture("photo_progressive.jpg"),
    );
}

#[test]
fn built_zip_reads_back_identically() {
    let dir = tmp("roundtrip");
    make_tree(&dir.join("src"));
    let built = build_zip_from_folder(&dir.join("src"), &dir.join("out")).unwrap();
    assert_eq!(built.len(), 2);
    assert_eq!((built[0].samples, built[0].classes), (4, 3));

    let map = std::fs::read_to_string(dir.join("out/train_map.txt")).unwrap();
    assert_eq!(
        map,
        "train/n01000000/sub/c.png\t0\ntrain/n02000000/a.jpeg\t1\ntrain/n02000000/b.JPEG\t1\ntrain/n03000000/d.jpg\t2\n"
    );
    let folder = ImageFolder::open(&dir.join("src/train")).unwrap();
    let zc = ZipCache::open_split(&dir.join("out"), "train", ZipCacheOptions::default()).unwrap();
    assert_eq!((zc.len(), zc.num_classes()), (4, 3));
    for i in 0..4 {
        assert_eq!(zc.label(i), folder.label(i));
        assert_eq!(zc.load(i).unwrap(), folder.load(i).unwrap());
    }
    // Members are stored, not recompressed.
    let mut ar =
        zip::ZipArchive::new(std::fs::File::open(dir.join("out/train.zip")).unwrap()).unwrap();
    assert_eq!(
        ar.by_index(0).unwrap().compression(),
        zip::CompressionMethod::Stored
    );

    // The loader runs on it end to end.
    let l = Loader::new(
        Arc::new(zc),
        Pipeline::imagenet_train(16, Interpolation::Bicubic),
        LoaderConfig::train(2, 0),
    )
    .unwrap();
    let batches: Vec<_> = l.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    assert!(batches[0].normalized_images().iter().all(|v| v.is_finite()));

    // 8-bit pixel batches (for a GPU) of the encoded members normalize to the same values.
    let pixels = Loader::new(
        l.dataset().clone(),
        l.pipeline().clone(),
        LoaderConfig {
            pixels: true,
            ..LoaderConfig::train(2, 0)
        },
    )
    .unwrap();
    for (p, b) in pixels.epoch(0).map(|b| b.unwrap()).zip(&batches) {
        assert!(matches!(p.images, BatchImages::Pixels { .. }));
        assert_eq!(p.normalized_images(), b.normalized_images());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A zip with members under `train/` and a hand-written official-style map.
fn official_layout(dir: &Path, map: &str) -> (PathBuf, PathBuf) {
    make_tree(&dir.join("src"));
    build_zip_from_folder(&dir.join("src"), &dir.join("data")).unwrap();
    let map_path = dir.join("data/custom_map.txt");
    std::fs::write(&map_path, map).unwrap();
    (dir.join("data/train.zip"), map_path)
}

#[test]
fn official_map_prefixes_unsorted_lines_and_label_order() {
    let dir = tmp("official");
    // Unsorted, `ImageNet/` prefixes, non-sorted class order (as the released maps).
    let map = "ImageNet/train/n03000000/d.jpg\t0\n\
               ImageNet/train/n01000000/sub/c.png\t2\n\
               train/n02000000/b.JPEG\t1\n\
               ImageNet/train/n02000000/a.jpeg\t1\n";
    let (zip, map_path) = official_layout(&dir, map);
    let zc = ZipCache::open(&zip, &map_path, ZipCacheOptions::default()).unwrap();
    let members: Vec<&str> = zc.samples().iter().map(|s| s.member.as_str()).collect();
    assert_eq!(
        members,
        [
            "train/n01000000/sub/c.png",
            "train/n02000000/a.jpeg",
            "train/n02000000/b.JPEG",
            "train/n03000000/d.jpg"
        ]
    );
    assert_eq!(
        (0..4).map(|i| zc.label(i)).collect::<Vec<_>>(),
        [2, 1, 1, 0]
    );
    assert_eq!(zc.samples()[0].map_line, 2);
    assert_eq!(
        zc.load(3).unwrap(),
        decode(&fixture("photo_progressive.jpg")).unwrap()
    );

    // Converter between the map's class order and sorted wnids.
    let conv = ClassIndexConverter::from_map_file_to_sorted(&map_path).unwrap();
    assert_eq!(conv.zip_wnids(), ["n03000000", "n02000000", "n01000000"]);
    assert_eq!(
        (
            conv.zip_to_target(0).unwrap(),
            conv.zip_to_target(2).unwrap()
        ),
        (2, 0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cache_mode_holds_only_this_ranks_shard() {
    let dir = tmp("cache");
    make_tree(&dir.join("src"));
    build_zip_from_folder(&dir.join("src"), &dir.join("data")).unwrap();
    let opts = ZipCacheOptions {
        cache: true,
        rank: 1,
        world_size: 2,
        ..Default::default()
    };
    let zc = Arc::new(ZipCache::open_split(&dir.join("data"), "train", opts).unwrap());
    let plain =
        ZipCache::open_split(&dir.join("data"), "train", ZipCacheOptions::default()).unwrap();
    assert_eq!(zc.load(1).unwrap(), plain.load(1).unwrap());
    assert_eq!(zc.load(3).unwrap(), plain.load(3).unwrap());
    let msg = format!("{:#}", zc.load(0).unwrap_err());
    assert!(msg.contains("belongs to rank 0"), "{msg}");
    // A loader with the matching shard only touches cached samples.
    let l = Loader::new(
        zc,
        Pipeline::imagenet_eval(16, 0.875, Interpolation::Bilinear),
        LoaderConfig::eval(4).with_shard(1, 2),
    )
    .unwrap();
    let b: Vec<_> = l.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(b[0].indices, [1, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn open_err(name: &str, map: &str, opts: ZipCacheOptions) -> String {
    let dir = tmp(name);
    let (zip, map_path) = official_layout(&dir, map);
    let msg = format!(
        "{:#}",
        ZipCache::open(&zip, &map_path, opts)
            .err()
            .expect("bad input must fail")
    );
    std::fs::remove_dir_all(&dir).unwrap();
    msg
}

#[test]
fn bad_maps_name_the_file_and_line() {
    let good = "train/n01000000/sub/c.png\t0\n";
    let msg = open_err(
        "malformed",
        &format!("{good}train/n02000000/a.jpeg 1\n"),
        ZipCacheOptions::default(),
    );
    assert!(
        msg.contains("custom_map.txt:2") && msg.contains("no tab"),
        "{msg}"
    );

    let msg = open_err(
        "range",
        &format!("{good}train/n02000000/a.jpeg\t7\n"),
        ZipCacheOptions {
            num_classes: Some(3),
            allow_empty_classes: true,
            ..Default::default()
        },
    );
    assert!(
        msg.contains("custom_map.txt:2") && msg.contains("label 7 out of range 0..3"),
        "{msg}"
    );

    let msg = open_err(
        "missing",
        &format!("{good}train/n02000000/zzz.JPEG\t1\n"),
        ZipCacheOptions::default(),
    );
    assert!(
        msg.contains("custom_map.txt:2")
            && msg.contains("train/n02000000/zzz.JPEG")
            && msg.contains("train.zip"),
        "{msg}"
    );

    let msg = open_err(
        "empty",
        &format!("{good}train/n02000000/a.jpeg\t2\n"),
        ZipCacheOptions::default(),
    );
    assert!(msg.contains("class 1 has no samples"), "{msg}");

    // A label near 2^32 must not size a per-class table (it used to abort on allocation).
    let msg = open_err(
        "huge-label",
        &format!("{good}train/n02000000/a.jpeg\t4294967295\n"),
        ZipCacheOptions::default(),
    );
    assert!(
        msg.contains("class 1 has no samples") && msg.contains("0..4294967296"),
        "{msg}"
    );
}

#[test]
fn corrupt_and_truncated_members_are_named_or_skipped() {
    let dir = tmp("corrupt");
    let src = dir.join("src/train");
    put(&src.join("n1/good.JPEG"), &fixture("photo_baseline.jpg"));
    let jpeg = fixture("photo_progressive.jpg");
    put(&src.join("n1/truncated.JPEG"), &jpeg[..jpeg.len() / 2]);
    put(
        &src.join("n2/garbage.JPEG"),
        b"\xFF\xD8\xFF\xE0 this is not really a jpeg",
    );
    put(&src.join("n2/good2.png"), &fixture("rgba.png"));
    build_zip_from_folder(&dir.join("src"), &dir.join("data")).unwrap();
    let zc = Arc::new(
        ZipCache::open_split(&dir.join("data"), "train", ZipCacheOptions::default()).unwrap(),
    );
    let names: Vec<String> = (0..4).map(|i| zc.name(i)).collect();
    let bad = names
        .iter()
        .position(|n| n.contains("truncated.JPEG"))
        .unwrap();
    let msg = format!("{:#}", zc.load(bad).unwrap_err());
    assert!(
        msg.contains("train.zip@train/n1/truncated.JPEG") && msg.contains("train_map.txt:"),
        "{msg}"
    );
    let bad = names
        .iter()
        .position(|n| n.contains("garbage.JPEG"))
        .unwrap();
    assert!(format!("{:#}", zc.load(bad).unwrap_err()).contains("garbage.JPEG"));

    let mut cfg = LoaderConfig::eval(4);
    cfg.skip_corrupt = true;
    let l = Loader::new(
        zc.clone(),
        Pipeline::imagenet_eval(16, 0.875, Interpolation::Bilinear),
        cfg,
    )
    .unwrap();
    let mut it = l.epoch(0);
    let b = it.next().unwrap().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(it.skipped(), 2);
    let l = Loader::new(
        zc,
        Pipeline::imagenet_eval(16, 0.875, Interpolation::Bilinear),
        LoaderConfig::eval(4),
    )
    .unwrap();
    assert!(l.epoch(0).next().unwrap().is_err());

    // A member whose bytes were damaged inside the archive fails its CRC check.
    let zip_path = dir.join("data/train.zip");
    let mut bytes = std::fs::read(&zip_path).unwrap();
    let pos = bytes.windows(4).position(|w| w == b"JFIF").unwrap() + 200;
    bytes[pos] ^= 0x55;
    std::fs::File::create(&zip_path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let zc = ZipCache::open_split(&dir.join("data"), "train", ZipCacheOptions::default()).unwrap();
    let msg = format!("{:#}", zc.load(0).unwrap_err());
    assert!(msg.contains("train/n1/good.JPEG"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_folder_rules() {
    let dir = tmp("folder");
    make_tree(&dir);
    let f = ImageFolder::open(&dir.join("train")).unwrap();
    assert_eq!(f.classes(), ["n01000000", "n02000000", "n03000000"]);
    assert_eq!(f.len(), 4); // notes.txt ignored
    std::fs::create_dir_all(dir.join("train/n04000000")).unwrap();
    let msg = format!("{:#}", ImageFolder::open(&dir.join("train")).err().unwrap());
    assert!(
        msg.contains("n04000000") && msg.contains("no images"),
        "{msg}"
    );
    // build-zip refuses splits with different classes.
    assert!(build_zip_from_folder(&dir, &dir.join("out")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_member_declaring_a_huge_size_is_refused_before_any_reservation() {
    let dir = tmp("huge-member");
    put(
        &dir.join("src/train/n1/a.JPEG"),
        &fixture("photo_baseline.jpg"),
    );
    put(
        &dir.join("src/train/n2/b.JPEG"),
        &fixture("photo_baseline.jpg"),
    );
    build_zip_from_folder(&dir.join("src"), &dir.join("data")).unwrap();
    // Patch every central-directory entry's uncompressed size to ~4 GiB.
    let zip_path = dir.join("data/train.zip");
    let mut bytes = std::fs::read(&zip_path).unwrap();
    let mut at = 0;
    while let Some(p) = bytes[at..]
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
    {
        let entry = at + p;
        bytes[entry + 24..entry + 28].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        at = entry + 4;
    }
    std::fs::write(&zip_path, &bytes).unwrap();
    let zc = ZipCache::open_split(&dir.join("data"), "train", ZipCacheOptions::default()).unwrap();
    let msg = format!("{:#}", zc.load(0).unwrap_err());
    assert!(
        msg.contains("train.zip@train/n") && msg.contains("declares 4294967280 bytes uncompressed"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
