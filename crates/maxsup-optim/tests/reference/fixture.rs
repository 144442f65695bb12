//! Loads `fixtures/torch_reference.json` (written by `fixtures/gen_fixtures.py`) and compares numbers.

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{Device, Tensor, Var};
use serde_json::Value;

/// The parsed fixture, loaded once per test binary.
pub fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/torch_reference.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
    })
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

pub fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

/// An f32 tensor from `{"shape": [...], "data": [...]}`.
pub fn tensor(entry: &Value) -> Tensor {
    Tensor::from_vec(f32s(&entry["data"]), usizes(&entry["shape"]), &Device::Cpu).unwrap()
}

/// Named f32 `Var`s from a `{name: {"shape", "data"}}` object.
pub fn vars(init: &Value) -> HashMap<String, Var> {
    init.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), Var::from_tensor(&tensor(v)).unwrap()))
        .collect()
}

/// Asserts |a - b| <= rel * max(|b|, floor) elementwise, naming `what` and the index on failure.
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], rel: f64, floor: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let tol = rel * e.abs().max(floor);
        assert!(
            (a - e).abs() <= tol,
            "{what}[{i}]: got {a}, PyTorch {e} (|diff| {} > {tol})",
            (a - e).abs()
        );
    }
}

pub fn tensor_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}
