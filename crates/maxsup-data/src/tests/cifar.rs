//! CIFAR-10 reader: real files (fetched into data/cifar-10-batches-bin when absent) and
//! synthetic records (always run).

use std::path::PathBuf;

use crate::cifar::{Cifar10, CifarSplit, RECORD_BYTES};
use crate::Dataset;

/// The real CIFAR-10 files, fetched with the project's script when absent (a failed fetch fails
/// the test: it never passes without its data).
fn cifar_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("data/cifar-10-batches-bin");
    crate::fetch::install_with_script(&root.join("data/fetch-cifar10.sh"), &dir, "test_batch.bin")
        .expect("CIFAR-10 is needed by this test and could not be installed");
    dir
}

#[test]
fn real_test_split_known_pixels_and_labels() {
    let dir = cifar_dir();
    let test = Cifar10::open(&dir, CifarSplit::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    let first20: Vec<u32> = (0..20).map(|i| test.label(i)).collect();
    assert_eq!(
        first20,
        [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    // Values read once with numpy (record 0: R row 0, G row 0, B(31,31), R(10,20)).
    let img = test.load(0).unwrap();
    let r: Vec<u8> = (0..4).map(|x| img.pixel(x, 0)[0]).collect();
    let g: Vec<u8> = (0..4).map(|x| img.pixel(x, 0)[1]).collect();
    assert_eq!(r, [158, 159, 165, 166]);
    assert_eq!(g, [112, 111, 116, 118]);
    assert_eq!(img.pixel(31, 31)[2], 110);
    assert_eq!(img.pixel(20, 10)[0], 175);
}

#[test]
fn real_train_split_counts_and_pixels() {
    let dir = cifar_dir();
    let train = Cifar10::open(&dir, CifarSplit::Train).unwrap();
    assert_eq!(train.len(), 50_000);
    let mut counts = [0usize; 10];
    for i in 0..train.len() {
        counts[train.label(i) as usize] += 1;
    }
    assert_eq!(counts, [5000; 10]);
    assert_eq!(train.label(0), 6);
    let r: Vec<u8> = (0..4)
        .map(|x| train.load(0).unwrap().pixel(x, 0)[0])
        .collect();
    assert_eq!(r, [59, 43, 50, 68]);
    assert_eq!(train.label(49_999), 1);
    assert_eq!(train.load(49_999).unwrap().pixel(31, 31)[2], 161);
    assert!(train.name(49_999).contains("data_batch_5.bin record 9999"));
}

fn synthetic_record(label: u8, seed: u8) -> Vec<u8> {
    let mut rec = vec![label];
    rec.extend((0..3072).map(|i| (i as u8).wrapping_mul(seed)));
    rec
}

#[test]
fn planar_records_become_interleaved_rgb() {
    let mut bytes = synthetic_record(7, 3);
    bytes.extend(synthetic_record(2, 5));
    let ds = Cifar10::from_records(bytes.clone(), "synthetic").unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!((ds.label(0), ds.label(1)), (7, 2));
    let img = ds.load(1).unwrap();
    let rec = &bytes[RECORD_BYTES..];
    for (x, y) in [(0, 0), (5, 3), (31, 31)] {
        let p = y * 32 + x;
        assert_eq!(
            img.pixel(x, y),
            [rec[1 + p], rec[1 + 1024 + p], rec[1 + 2048 + p]]
        );
    }
}

#[test]
fn missing_and_truncated_files_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("maxsup-cifar-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Cifar10::open(&dir, CifarSplit::Test).err().unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("test_batch.bin") && msg.contains("fetch-cifar10.sh"),
        "{msg}"
    );

    std::fs::write(dir.join("test_batch.bin"), vec![0u8; RECORD_BYTES * 3 + 10]).unwrap();
    let msg = format!("{:#}", Cifar10::open(&dir, CifarSplit::Test).err().unwrap());
    assert!(
        msg.contains("test_batch.bin") && msg.contains("truncated"),
        "{msg}"
    );

    let bad_label = synthetic_record(10, 1);
    let msg = format!(
        "{:#}",
        Cifar10::from_records(bad_label, "x.bin").err().unwrap()
    );
    assert!(msg.contains("x.bin") && msg.contains("label 10"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
