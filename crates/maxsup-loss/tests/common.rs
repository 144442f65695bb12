//! Helpers shared by the integration tests: the PyTorch reference fixture and comparisons.

#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};
use serde_json::Value;

pub fn reference() -> Value {
    let text = include_str!("../fixtures/reference.json");
    serde_json::from_str(text).expect("fixtures/reference.json is valid JSON")
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub fn ints(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u32)
        .collect()
}

pub fn var(values: &[f64], shape: (usize, usize), dtype: DType) -> Var {
    let t = Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    Var::from_tensor(&t).unwrap()
}

pub fn targets(values: &[u32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

/// Value and flattened gradient of `loss` w.r.t. `z`, both as f64.
pub fn value_and_grad(z: &Var, loss: Result<Tensor>) -> (f64, Vec<f64>) {
    let loss = loss.unwrap();
    let grads = loss.backward().unwrap();
    let g = grads
        .get(z.as_tensor())
        .expect("gradient reaches the logits");
    let value = loss
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let g = g
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    (value, g)
}

pub fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    let tol = rel * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: got {actual}, expected {expected} (tol {tol})"
    );
}

pub fn assert_all_close(actual: &[f64], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_close(*a, *e, rel, &format!("{what}[{i}]"));
    }
}
