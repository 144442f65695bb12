//! Grad-CAM against its closed form: for a ResNet (global average pool + linear classifier)
//! `d y^c / d A_k = W_ck / (h w)` everywhere, so the map is `ReLU(dense_logits_c - b_c) / (h w)`;
//! for a DeiT against PyTorch with the official target layer (fixtures/gen_gradcam.py).

/// maxsup-models' weight and input formulas, which the PyTorch fixture uses too.
#[path = "../../maxsup-models/tests/common/mod.rs"]
mod models_common;

use candle_core::{Device, Tensor};
use maxsup_analysis::grad_cam;
use maxsup_models::{create_model, ModelOptions};

fn images(b: usize, side: usize) -> Tensor {
    let n = b * 3 * side * side;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(values, (b, 3, side, side), &Device::Cpu).unwrap()
}

#[test]
fn resnet_grad_cam_equals_the_closed_form() {
    let options = ModelOptions {
        num_classes: Some(10),
        seed: 3,
        ..ModelOptions::default()
    };
    let model = create_model("resnet20_cifar", &options, &Device::Cpu).unwrap();
    let x = images(2, 32);
    let cam = grad_cam(model.as_ref(), &x, Some(&[4, 7])).unwrap();
    let feature_map = model.forward_stage(&x, false).unwrap();
    let dense = model.dense_logits(&feature_map).unwrap(); // [B, K, h, w]
    let (_, _, h, w) = dense.dims4().unwrap();
    assert_eq!((cam.height, cam.width), (h, w));
    let bias: Vec<f32> = model
        .params()
        .get("fc.bias")
        .unwrap()
        .var
        .to_vec1()
        .unwrap();
    for (i, &c) in [4usize, 7].iter().enumerate() {
        let expected: Vec<f32> = dense
            .get(i)
            .unwrap()
            .get(c)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (j, e) in expected.iter().enumerate() {
            let closed = ((e - bias[c]) / (h * w) as f32).max(0.0);
            assert!(
                (cam.maps[i][j] - closed).abs() < 1e-5,
                "image {i} cell {j}: {} vs {closed}",
                cam.maps[i][j]
            );
        }
    }
    assert_eq!(cam.classes, vec![4, 7]);
}

#[test]
fn deit_grad_cam_is_on_the_patch_grid_and_defaults_to_the_top_class() {
    let options = ModelOptions {
        num_classes: Some(10),
        seed: 1,
        ..ModelOptions::default()
    };
    let model = create_model("deit_tiny_patch4_32", &options, &Device::Cpu).unwrap();
    let x = images(1, 32);
    let cam = grad_cam(model.as_ref(), &x, None).unwrap();
    assert_eq!((cam.height, cam.width), (8, 8));
    assert_eq!(cam.maps[0].len(), 64);
    assert!(cam.maps[0].iter().all(|v| *v >= 0.0 && v.is_finite()));
    let top: Vec<u32> = model
        .forward_t(&x, false)
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(cam.classes, top);
    assert!(grad_cam(model.as_ref(), &x, Some(&[10]))
        .unwrap_err()
        .to_string()
        .contains("out of range"));
}

#[test]
fn deit_grad_cam_equals_pytorch_at_the_last_blocks_first_norm() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("gradcam_deit_tiny_patch4_32.safetensors");
    let fixture = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let shape: Vec<usize> = fixture["input_shape"]
        .to_vec1::<i64>()?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let classes: Vec<u32> = fixture["classes"]
        .to_vec1::<i64>()?
        .iter()
        .map(|&c| c as u32)
        .collect();
    let options = ModelOptions {
        num_classes: Some(10),
        ..ModelOptions::default()
    };
    let model = create_model("deit_tiny_patch4_32", &options, &Device::Cpu)?;
    models_common::formula_fill(model.params())?;
    let x = models_common::formula_input(&shape)?;
    let cam = grad_cam(model.as_ref(), &x, Some(&classes))?;
    let got = Tensor::from_vec(cam.maps.concat(), (classes.len(), 64), &Device::Cpu)?;
    // Most cells are positive: a map of zeros (the gradient of tokens that reach the logits
    // only through the CLS token) cannot pass.
    let positive = cam.maps.concat().iter().filter(|&&v| v > 0.0).count();
    assert!(positive > 64, "{positive} of 128 cells positive");
    models_common::assert_close("DeiT Grad-CAM", &got, &fixture["cam"], 1e-4)?;
    // The target's forward gives the model's own logits.
    let (_, logits) = model.forward_cam(&x)?;
    models_common::assert_close("logits", &logits, &model.forward_t(&x, false)?, 1e-5)?;
    Ok(())
}
