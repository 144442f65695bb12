//! `train-vit --nproc 2 --device cpu` trains the weights a single process trains with the same
//! global batch (DeiT has no batch statistics; drop path and Mixup/CutMix off), up to f32
//! rounding of the gradient sums.
//!
//! Needs CIFAR-10 in data/cifar-10-batches-bin (`bash data/fetch-cifar10.sh`, which CI runs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_train-vit");

fn cifar_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-batches-bin");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fetch-cifar10.sh");
    maxsup_data::fetch::install_with_script(&script, &dir, "test_batch.bin")
        .expect("CIFAR-10 is needed by this test and could not be installed");
    dir
}

fn train(out: &Path, extra: &[&str]) {
    let status = Command::new(BIN)
        .arg("--cifar10")
        .arg(cifar_dir())
        .args([
            "--epochs",
            "1",
            "--train-subset",
            "64",
            "--eval-subset",
            "40",
        ])
        .args([
            "--batch-size",
            "16",
            "--eval-batch-size",
            "16",
            "--drop-path",
            "0",
        ])
        .args([
            "--mixup",
            "0",
            "--cutmix",
            "0",
            "--no-progress",
            "--out-dir",
        ])
        .arg(out)
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "train-vit {extra:?} failed");
}

fn model(path: &Path) -> HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n.starts_with("model/"))
        .map(|(n, t): (String, Tensor)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn two_processes_train_the_weights_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    train(&one, &[]);
    train(&two, &["--nproc", "2"]);
    let (a, b) = (
        model(&one.join("last.safetensors")),
        model(&two.join("last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    let scale = a.values().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let (mut worst, mut diff2, mut norm2) = (0f32, 0f64, 0f64);
    for (name, x) in &a {
        let y = &b[name];
        assert_eq!(x.len(), y.len(), "{name}");
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
            diff2 += ((p - q) as f64).powi(2);
            norm2 += (*p as f64).powi(2);
        }
    }
    // Per weight, relative to the model's weight scale: the gradient sums are added in another
    // order (two halves, then the halves), and Adam turns the rounding of gradients that are
    // zero in exact arithmetic (the attention key bias) into updates of ~1e-8.
    assert!(
        worst <= 1e-5 * scale,
        "max |difference| {worst:e} vs weight scale {scale:e}"
    );
    let rel = (diff2 / norm2).sqrt();
    assert!(rel < 1e-6, "relative norm of the difference {rel:e}");
    assert!(a != b || worst == 0.0);
}
