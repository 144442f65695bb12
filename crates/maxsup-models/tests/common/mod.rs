//! Helpers shared by the integration tests: the deterministic weight/input formulas of
//! fixtures/gen_fixtures.py and a relative comparison.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use maxsup_models::ParamStore;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Pseudo-random value in [-1, 1) of fixtures/gen_fixtures.py:
/// 2 frac(h) - 1 with h = sin(12.9898 j + 78.233 k) * 43758.5453 (float64, same operation order).
pub fn hash_value(j: usize, k: f64) -> f64 {
    let h = (12.9898 * j as f64 + 78.233 * k).sin() * 43758.5453;
    2.0 * (h - h.floor()) - 1.0
}

/// Fills every tensor (except fixed `blur_filter`s) by the formula documented in
/// fixtures/gen_fixtures.py: sorted names, tensor k, element j, b = hash(j, k).
pub fn formula_fill(params: &ParamStore) -> anyhow::Result<()> {
    let mut names: Vec<&str> = params
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !n.ends_with("blur_filter"))
        .collect();
    names.sort_unstable();
    for (k, name) in names.iter().enumerate() {
        let e = params.get(name).expect("name from the store");
        let dims = e.var.dims().to_vec();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let fan_in: usize = dims[1..].iter().product();
        let values: Vec<f32> = (0..e.var.elem_count())
            .map(|j| {
                let b = hash_value(j, k as f64);
                let v = match leaf {
                    "running_var" => 1.0 + 0.5 * b,
                    "running_mean" | "cls_token" | "pos_embed" | "bias" => 0.1 * b,
                    "weight" if dims.len() == 1 => 1.0 + 0.1 * b,
                    "weight" => b * (3.0 / fan_in as f64).sqrt(),
                    other => panic!("no fill rule for {other} ({name})"),
                };
                v as f32
            })
            .collect();
        e.var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
    }
    Ok(())
}

/// x[i] = hash(i, 0.5) over the flattened NCHW tensor.
pub fn formula_input(shape: &[usize]) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| hash_value(i, 0.5) as f32).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// max |got - want| <= rel * max |want| (norm-relative; elementwise relative error is
/// meaningless for entries near zero).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f64) -> anyhow::Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let got = got.to_dtype(DType::F64)?;
    let want = want.to_dtype(DType::F64)?;
    let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?;
    eprintln!("{what}: rel err {:.2e}", diff / scale.max(1e-12));
    assert!(
        diff <= rel * scale.max(1e-12),
        "{what}: max abs diff {diff:e} vs max |ref| {scale:e} (rel {rel:e})"
    );
    Ok(())
}
