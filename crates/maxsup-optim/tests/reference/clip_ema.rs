//! Gradient clipping against `torch.nn.utils.clip_grad_norm_` and model EMA against timm `ModelEmaV2`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use maxsup_optim::{clip_grad_norm, clip_grad_norm_on_device, ModelEma};

use crate::fixture::{assert_close, f64s, fixture, tensor_f64, usizes};
use crate::optimizers::grad_store;

#[test]
fn clip_grad_norm_matches_torch() {
    for case in fixture()["clip_grad_norm"].as_array().unwrap() {
        let max_norm = case["max_norm"].as_f64().unwrap();
        let grads_json = case["grads"].as_object().unwrap();
        let vars: HashMap<String, Var> = grads_json
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Var::zeros(usizes(&v["shape"]), DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        let data: serde_json::Map<String, serde_json::Value> = grads_json
            .iter()
            .map(|(k, v)| (k.clone(), v["data"].clone()))
            .collect();
        let mut grads = grad_store(&vars, &serde_json::Value::Object(data));
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let list: Vec<Var> = names.iter().map(|n| vars[*n].clone()).collect();
        let total = clip_grad_norm(&mut grads, &list, max_norm).unwrap();
        assert_close(
            &format!("total norm (max_norm {max_norm})"),
            &[total],
            &[case["total_norm"].as_f64().unwrap()],
            1e-6,
            0.0,
        );
        for (name, expected) in case["clipped"].as_object().unwrap() {
            let g = grads.get(vars[name].as_tensor()).unwrap();
            assert_close(
                &format!("clipped grad {name} (max_norm {max_norm})"),
                &tensor_f64(g),
                &f64s(expected),
                1e-6,
                1e-3,
            );
        }
    }
}

#[test]
fn clip_grad_norm_skips_vars_without_gradient() {
    let a = Var::new(&[3f32, 4.], &Device::Cpu).unwrap();
    let b = Var::new(&[100f32], &Device::Cpu).unwrap();
    let mut grads = (a.as_tensor() * a.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .affine(0.5, 0.0)
        .unwrap()
        .backward()
        .unwrap();
    let total = clip_grad_norm(&mut grads, &[a.clone(), b], 1.0).unwrap();
    assert!((total - 5.0).abs() < 1e-6, "{total}");
    let g = grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert!(
        (g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6,
        "{g:?}"
    );
}

/// The device-side clipping (no read of the norm) gives the same gradients and norm, whether it
/// clips or not, and leaves gradients as they are for a NaN norm.
#[test]
fn clipping_on_the_device_equals_the_host_version() {
    let a = Var::new(&[3f32, 4.], &Device::Cpu).unwrap();
    let loss = |v: &Var| v.as_tensor().sqr().unwrap().sum_all().unwrap();
    for max_norm in [1.0, 100.0, 0.0] {
        let (mut host, mut device) = (loss(&a).backward().unwrap(), loss(&a).backward().unwrap());
        let total = clip_grad_norm(&mut host, std::slice::from_ref(&a), max_norm).unwrap();
        let on_device = clip_grad_norm_on_device(&mut device, std::slice::from_ref(&a), max_norm)
            .unwrap()
            .unwrap();
        assert_eq!(on_device.to_scalar::<f64>().unwrap(), total);
        let bits = |g: &candle_core::backprop::GradStore| -> Vec<u32> {
            let t = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
            t.iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&host), bits(&device), "max_norm {max_norm}");
    }
    let nan = Var::new(&[f32::NAN, 1.0], &Device::Cpu).unwrap();
    let mut grads = loss(&nan).backward().unwrap();
    let before = grads
        .get(nan.as_tensor())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    clip_grad_norm_on_device(&mut grads, std::slice::from_ref(&nan), 1.0).unwrap();
    let after = grads
        .get(nan.as_tensor())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(after[0].is_nan() && after[1] == before[1], "{after:?}");
    assert!(clip_grad_norm_on_device(&mut grads, &[], 1.0)
        .unwrap()
        .is_none());
}

fn ema_tensor(
    name: &str,
    data: &serde_json::Value,
    dtypes: &serde_json::Value,
    shape: &[usize],
) -> Tensor {
    let t = Tensor::from_vec(f64s(data), shape, &Device::Cpu).unwrap();
    match dtypes[name].as_str().unwrap() {
        "int64" => t.to_dtype(DType::I64).unwrap(),
        "float32" => t.to_dtype(DType::F32).unwrap(),
        other => panic!("fixture dtype {other}"),
    }
}

#[test]
fn model_ema_matches_timm_model_ema_v2() {
    let c = &fixture()["ema"];
    let dtypes = &c["dtypes"];
    let shapes: HashMap<String, Vec<usize>> = c["init"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), usizes(&v["shape"])))
        .collect();
    let init: HashMap<String, Tensor> = c["init"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), ema_tensor(k, &v["data"], dtypes, &shapes[k])))
        .collect();
    let mut ema = ModelEma::new(
        init.iter().map(|(k, t)| (k.as_str(), t)),
        c["decay"].as_f64().unwrap(),
    )
    .unwrap();
    for (s, step) in c["steps"].as_array().unwrap().iter().enumerate() {
        let model: HashMap<String, Tensor> = step["model"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), ema_tensor(k, v, dtypes, &shapes[k])))
            .collect();
        ema.update(model.iter().map(|(k, t)| (k.as_str(), t)))
            .unwrap();
        for (name, expected) in step["ema"].as_object().unwrap() {
            let got = ema.get(name).unwrap();
            assert_eq!(got.dtype(), init[name].dtype(), "{name} dtype");
            assert_close(
                &format!("EMA step {s} {name}"),
                &tensor_f64(got),
                &f64s(expected),
                1e-6,
                1e-2,
            );
        }
    }
    // Export / import round trip keeps the averages exactly.
    let back = ModelEma::from_state(ema.export_state().unwrap(), ema.decay()).unwrap();
    for (k, t) in ema.averages() {
        assert_eq!(tensor_f64(t), tensor_f64(back.get(k).unwrap()), "{k}");
    }
}

#[test]
fn model_ema_rejects_mismatched_models() {
    let w = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let mut ema = ModelEma::new([("w", &w)], 0.9).unwrap();
    let wrong_shape = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err = ema.update([("w", &wrong_shape)]).unwrap_err().to_string();
    assert!(err.contains("`w`"), "{err}");
    let err = ema.update([("v", &w)]).unwrap_err().to_string();
    assert!(err.contains("`v` is not in the EMA"), "{err}");
    let err = ema.update(std::iter::empty()).unwrap_err().to_string();
    assert!(err.contains("`w` is missing"), "{err}");
}
