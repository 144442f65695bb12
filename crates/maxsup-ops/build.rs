//! Compiles `kernels/*.cu` with nvcc when the `cuda` feature is on: a fatbin holding SASS for the
//! target GPU (no JIT at start-up) plus PTX for newer ones, embedded in the library by
//! `src/cuda/module.rs`. The default (CPU) build does nothing here.
//!
//! nvcc: `$NVCC`, else `nvcc` on `PATH`, else `$CUDA_HOME/bin/nvcc`. Target: `$CUDA_COMPUTE_CAP`
//! (e.g. 90 for H100/H200, 80 for A100), else `nvidia-smi`'s answer; `tools/cuda/env.sh` sets
//! both for a machine without a GPU.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &["kernels/ops.cu"];
/// Files `kernels/ops.cu` includes (rebuilt when they change).
const INCLUDED: &[&str] = &["kernels/attention.cuh"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for k in KERNELS.iter().chain(INCLUDED) {
        println!("cargo:rerun-if-changed={k}");
    }
    for v in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = nvcc();
    let cap = compute_cap();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let fatbin = out.join("maxsup_ops.fatbin");
    let status = Command::new(&nvcc)
        .args(["--fatbin", "-O3", "-std=c++17"])
        .arg(format!("-gencode=arch=compute_{cap},code=sm_{cap}"))
        .arg(format!("-gencode=arch=compute_{cap},code=compute_{cap}"))
        .arg("-o")
        .arg(&fatbin)
        .args(KERNELS)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run nvcc ({}): {e}; see docs/cuda.md",
                nvcc.display()
            )
        });
    assert!(status.success(), "nvcc failed on {KERNELS:?} ({status})");
}

/// `$CUDA_COMPUTE_CAP` (e.g. 90, or 90a as cudaforge accepts), else what `nvidia-smi` reports
/// for GPU 0 (as candle's kernel build does); there is no silent default, since kernels built for
/// the wrong GPU fail only at run time.
fn compute_cap() -> u32 {
    let parse = |v: &str| -> u32 {
        v.trim()
            .trim_end_matches('a')
            .replace('.', "")
            .parse()
            .unwrap_or_else(|_| panic!("compute capability `{v}`: expected a number such as 90"))
    };
    if let Ok(v) = std::env::var("CUDA_COMPUTE_CAP") {
        return parse(&v);
    }
    let smi = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output();
    match smi {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            parse(text.lines().next().unwrap_or_default())
        }
        _ => panic!(
            "no GPU to ask for its compute capability: set CUDA_COMPUTE_CAP (90 for H100/H200, 80 for A100); see docs/cuda.md"
        ),
    }
}

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    let on_path = Command::new("nvcc").arg("--version").output().is_ok();
    if on_path {
        return PathBuf::from("nvcc");
    }
    match std::env::var_os("CUDA_HOME") {
        Some(home) => PathBuf::from(home).join("bin/nvcc"),
        None => panic!(
            "nvcc not found: set NVCC or CUDA_HOME, or source tools/cuda/env.sh (docs/cuda.md)"
        ),
    }
}
