//! The default binary on real data, killed with SIGKILL after its first checkpoint and resumed
//! with `--resume`, ends with exactly the weights of a run that was never interrupted.
//!
//! Needs CIFAR-10 in data/cifar-10-batches-bin (`bash data/fetch-cifar10.sh`, which CI runs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_train-conv");

fn cifar_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-batches-bin")
}

fn command(out_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--cifar10")
        .arg(cifar_dir())
        .args([
            "--epochs",
            "3",
            "--train-subset",
            "400",
            "--eval-subset",
            "200",
            "--batch-size",
            "50",
        ])
        .args(["--eval-batch-size", "200", "--no-progress", "--out-dir"])
        .arg(out_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn model_weights(checkpoint: &Path) -> HashMap<String, Vec<f32>> {
    let tensors = candle_core::safetensors::load(checkpoint, &Device::Cpu).unwrap();
    tensors
        .into_iter()
        .filter(|(name, _)| name.starts_with("model/"))
        .map(|(name, t): (String, Tensor)| {
            (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn killed_run_resumes_to_identical_weights() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fetch-cifar10.sh");
    maxsup_data::fetch::install_with_script(&script, &cifar_dir(), "test_batch.bin")
        .expect("CIFAR-10 is needed by this test and could not be installed");
    let dir = tempfile::tempdir().unwrap();
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    assert!(command(&full).status().unwrap().success());

    let mut child = command(&killed).spawn().unwrap();
    let checkpoint = killed.join("last.safetensors");
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let resumed = Command::new(BIN)
        .arg("--resume")
        .arg(&checkpoint)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(resumed.success());
    let (a, b) = (
        model_weights(&full.join("last.safetensors")),
        model_weights(&checkpoint),
    );
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (name, values) in &a {
        assert_eq!(
            Some(values),
            b.get(name),
            "tensor {name} differs after kill + resume"
        );
    }
}

#[test]
fn asking_for_cuda_without_the_feature_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--device", "cuda:0", "--epochs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(not(feature = "cuda")) {
        assert!(stderr.contains("built without CUDA support"), "{stderr}");
    }
}
