//! Fashion-MNIST reader: real files (fetched into data/fashion-mnist when absent) and
//! synthetic IDX files written to a temp dir (always run), covering the padding and every error path.

use std::path::{Path, PathBuf};

use crate::fashion_mnist::{IMAGES_MAGIC, LABELS_MAGIC, PAD, SIDE};
use crate::{Dataset, FashionMnist, FashionSplit};

/// The real Fashion-MNIST files, fetched with the project's script when absent (a failed fetch
/// fails the test).
fn fashion_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("data/fashion-mnist");
    crate::fetch::install_with_script(
        &root.join("data/fetch-fashion-mnist.sh"),
        &dir,
        "t10k-labels-idx1-ubyte",
    )
    .expect("Fashion-MNIST is needed by this test and could not be installed");
    dir
}

/// The padded RGB pixel that shows source pixel (x, y) of the 28x28 image.
fn padded(img: &crate::RgbImage, x: usize, y: usize) -> [u8; 3] {
    img.pixel(x + PAD, y + PAD)
}

fn class_counts(ds: &FashionMnist) -> [usize; 10] {
    let mut counts = [0usize; 10];
    for i in 0..ds.len() {
        counts[ds.label(i) as usize] += 1;
    }
    counts
}

#[test]
fn real_test_split_known_labels_and_pixels() {
    let dir = fashion_dir();
    let test = FashionMnist::open(&dir, FashionSplit::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.num_classes(), 10);
    assert_eq!(test.split(), Some(FashionSplit::Test));
    assert_eq!(test.label(0), 9);
    assert_eq!(
        FashionMnist::CLASS_NAMES[test.label(0) as usize],
        "Ankle boot"
    );
    let first20: Vec<u32> = (0..20).map(|i| test.label(i)).collect();
    assert_eq!(
        first20,
        [9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1, 2, 4, 8, 0]
    );
    assert_eq!(class_counts(&test), [1000; 10]);
    // Values read once with numpy from the package's .gz files (image 0: [y, x]).
    let img = test.load(0).unwrap();
    assert_eq!((img.width, img.height), (32, 32));
    assert_eq!(padded(&img, 5, 20), [184; 3]);
    assert_eq!(padded(&img, 20, 15), [154; 3]);
    assert_eq!(padded(&img, 17, 20), [255; 3]);
    let row14: Vec<u8> = (12..16).map(|x| padded(&img, x, 14)[0]).collect();
    assert_eq!(row14, [98, 136, 110, 109]);
    assert_eq!(test.raw_image(0)[20 * 28 + 5], 184);
    assert_eq!(test.label(9_999), 5);
    assert_eq!(padded(&test.load(9_999).unwrap(), 11, 14), [128; 3]);
}

#[test]
fn real_train_split_counts_and_pixels() {
    let dir = fashion_dir();
    let train = FashionMnist::open(&dir, FashionSplit::Train).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(class_counts(&train), [6000; 10]);
    let first20: Vec<u32> = (0..20).map(|i| train.label(i)).collect();
    assert_eq!(
        first20,
        [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4]
    );
    let img = train.load(0).unwrap();
    let row14: Vec<u8> = (12..16).map(|x| padded(&img, x, 14)[1]).collect();
    assert_eq!(row14, [237, 226, 217, 223]);
    assert_eq!(train.label(59_999), 5);
    assert_eq!(padded(&train.load(59_999).unwrap(), 6, 14), [144; 3]);
    assert!(
        train
            .name(59_999)
            .ends_with("train-images-idx3-ubyte image 59999"),
        "{}",
        train.name(59_999)
    );
}

/// A fresh temp dir per test (tests run in parallel).
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maxsup-fashion-{}-{}", test, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idx_images(magic: u32, count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for v in [magic, count, rows, cols] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

fn idx_labels(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

/// Two 28x28 images whose every pixel differs (and none is 0), so padding mistakes show.
fn two_images() -> Vec<u8> {
    (0..2 * 784).map(|i| (i % 251 + 1) as u8).collect()
}

/// Writes a valid test split holding `labels.len()` images and returns the two paths.
fn write_split(dir: &Path, labels: &[u8]) -> (PathBuf, PathBuf) {
    let n = labels.len();
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i % 251 + 1) as u8).collect();
    let images = dir.join(FashionSplit::Test.images_file());
    let labels_path = dir.join(FashionSplit::Test.labels_file());
    std::fs::write(&images, idx_images(IMAGES_MAGIC, n as u32, 28, 28, &pixels)).unwrap();
    std::fs::write(&labels_path, idx_labels(n as u32, labels)).unwrap();
    (images, labels_path)
}

fn error_of(images: &Path, labels: &Path) -> String {
    format!(
        "{:#}",
        FashionMnist::from_idx_files(images, labels)
            .err()
            .expect("expected an error")
    )
}

#[test]
fn gray_is_padded_to_32x32_rgb_exactly() {
    let dir = temp_dir("pad");
    let (images, labels) = write_split(&dir, &[3, 9]);
    let ds = FashionMnist::from_idx_files(&images, &labels).unwrap();
    assert_eq!((ds.len(), ds.num_classes(), ds.split()), (2, 10, None));
    assert_eq!((ds.label(0), ds.label(1)), (3, 9));
    let raw = two_images();
    assert_eq!(ds.raw_image(1), &raw[784..]);
    let img = ds.load(1).unwrap();
    assert_eq!(
        (img.width, img.height, img.data.len(), SIDE),
        (32, 32, 32 * 32 * 3, 32)
    );
    for y in 0..32 {
        for x in 0..32 {
            let inside = (PAD..PAD + 28).contains(&x) && (PAD..PAD + 28).contains(&y);
            let expected = if inside {
                raw[784 + (y - PAD) * 28 + (x - PAD)]
            } else {
                0
            };
            assert_eq!(img.pixel(x, y), [expected; 3], "pixel ({x}, {y})");
        }
    }
    assert!(
        ds.name(1).ends_with("t10k-images-idx3-ubyte image 1"),
        "{}",
        ds.name(1)
    );
    let msg = format!("{:#}", ds.load(2).err().unwrap());
    assert!(msg.contains("out of range"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_names_missing_files_and_checks_the_official_count() {
    let dir = temp_dir("open");
    let msg = format!(
        "{:#}",
        FashionMnist::open(&dir, FashionSplit::Test).err().unwrap()
    );
    assert!(
        msg.contains("t10k-images-idx3-ubyte") && msg.contains("fetch-fashion-mnist.sh"),
        "{msg}"
    );

    write_split(&dir, &[1, 2]);
    let msg = format!(
        "{:#}",
        FashionMnist::open(&dir, FashionSplit::Test).err().unwrap()
    );
    assert!(msg.contains("holds 2 images, expected 10000"), "{msg}");
    let msg = format!(
        "{:#}",
        FashionMnist::open(&dir, FashionSplit::Train).err().unwrap()
    );
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_files_are_clear_errors() {
    let dir = temp_dir("truncated");
    let (images, labels) = write_split(&dir, &[0, 1]);
    let full = std::fs::read(&images).unwrap();

    std::fs::write(&images, &full[..full.len() - 100]).unwrap();
    let msg = error_of(&images, &labels);
    assert!(
        msg.contains("t10k-images-idx3-ubyte is truncated") && msg.contains("announces 2 samples"),
        "{msg}"
    );

    std::fs::write(&images, &full[..10]).unwrap();
    let msg = error_of(&images, &labels);
    assert!(
        msg.contains("t10k-images-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );

    std::fs::write(&images, &full).unwrap();
    std::fs::write(&labels, idx_labels(3, &[0, 1])).unwrap();
    let msg = error_of(&images, &labels);
    assert!(msg.contains("t10k-labels-idx1-ubyte is truncated"), "{msg}");

    let mut trailing = full.clone();
    trailing.push(7);
    std::fs::write(&images, &trailing).unwrap();
    std::fs::write(&labels, idx_labels(2, &[0, 1])).unwrap();
    let msg = error_of(&images, &labels);
    assert!(msg.contains("1 trailing bytes"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_magic_and_bad_contents_are_clear_errors() {
    let dir = temp_dir("magic");
    let (images, labels) = write_split(&dir, &[0, 1]);

    // The labels file given as the images file: wrong magic, named.
    let msg = error_of(&labels, &labels);
    assert!(
        msg.contains("t10k-labels-idx1-ubyte has magic number 0x00000801, expected 0x00000803"),
        "{msg}"
    );
    let msg = error_of(&images, &images);
    assert!(
        msg.contains("magic number 0x00000803, expected 0x00000801"),
        "{msg}"
    );

    std::fs::write(&labels, idx_labels(2, &[4, 10])).unwrap();
    let msg = error_of(&images, &labels);
    assert!(
        msg.contains("t10k-labels-idx1-ubyte: sample 1 has label 10"),
        "{msg}"
    );

    std::fs::write(&labels, idx_labels(3, &[4, 5, 6])).unwrap();
    let msg = error_of(&images, &labels);
    assert!(
        msg.contains("holds 2 images but") && msg.contains("holds 3 labels"),
        "{msg}"
    );

    std::fs::write(&images, idx_images(IMAGES_MAGIC, 1, 32, 32, &[0; 1024])).unwrap();
    let msg = error_of(&images, &labels);
    assert!(msg.contains("32x32 images, expected 28x28"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gzipped_files_are_recognised() {
    let dir = temp_dir("gzip");
    let (images, labels) = write_split(&dir, &[0]);
    // A still-compressed file under the raw name: gzip magic 1f 8b.
    std::fs::write(
        &images,
        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7],
    )
    .unwrap();
    let msg = error_of(&images, &labels);
    assert!(
        msg.contains("t10k-images-idx3-ubyte is gzip-compressed"),
        "{msg}"
    );
    // Only the .gz download present: the message points at it.
    std::fs::rename(&images, dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let msg = error_of(&images, &labels);
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz exists: gunzip it"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
