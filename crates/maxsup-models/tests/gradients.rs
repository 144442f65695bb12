//! Every trainable parameter of every registered model must receive a non-zero gradient:
//! catches the silent-freeze class of bugs (candle ops without backward, detached branches).

use candle_core::{DType, Device, Tensor};
use maxsup_models::{create_model, model_names, ModelFamily, ModelOptions};

/// Input geometry small enough for a fast test, large enough that every BatchNorm in train mode
/// sees several values per channel (with 2 values BN's output is +-1 whatever its input, which
/// would legitimately starve earlier layers of gradient).
/// Returns (batch, image size, DeiT img_size option).
fn input_for(name: &str) -> (usize, usize, Option<usize>) {
    if name.contains("patch16") {
        (2, 32, Some(32)) // 4 patch tokens
    } else if name.contains("patch4") {
        (2, 8, Some(8)) // 4 patch tokens
    } else if name == "resnet18_cifar" || name == "resnet50_cifar" {
        (2, 16, None) // no downsampling stem: layer4 is 2x2
    } else if name.ends_with("_cifar") {
        (2, 32, None)
    } else {
        (4, 32, None) // layer4 is 1x1: 4 values per BN channel
    }
}

fn check_all_params_get_gradient(name: &str) -> anyhow::Result<()> {
    let (batch, size, img_size) = input_for(name);
    let options = ModelOptions {
        num_classes: Some(3),
        img_size,
        ..Default::default()
    };
    let model = create_model(name, &options, &Device::Cpu)?;
    let n = batch * 3 * size * size;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Tensor::from_vec(x, (batch, 3, size, size), &Device::Cpu)?;
    let logits = model.forward_t(&x, true)?;
    assert_eq!(logits.dims(), &[batch, 3], "{name}");
    // A fixed, non-degenerate weighting of the logits as the loss.
    let w: Vec<f32> = (0..batch * 3)
        .map(|i| (i as f32 * 1.3 + 0.4).cos())
        .collect();
    let w = Tensor::from_vec(w, (batch, 3), &Device::Cpu)?;
    let loss = (logits * w)?.sum_all()?;
    let grads = loss.backward()?;
    let mut missing = vec![];
    for p in model.params().trainable() {
        let ok = match grads.get(&p.var) {
            Some(g) => {
                g.abs()?
                    .max_all()?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?
                    > 0.0
            }
            None => false,
        };
        if !ok {
            missing.push(p.name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{name}: parameters without gradient: {missing:?}"
    );
    for b in model.params().buffers() {
        assert!(
            grads.get(&b.var).is_none(),
            "{name}: buffer {} received a gradient",
            b.name
        );
    }
    Ok(())
}

fn check_group(filter: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let names: Vec<_> = model_names().into_iter().filter(|n| filter(n)).collect();
    assert!(!names.is_empty());
    for name in names {
        check_all_params_get_gradient(name)?;
    }
    Ok(())
}

/// The registry's declared family and input size of `name`.
fn family_and_size(name: &str) -> (ModelFamily, usize) {
    let info = maxsup_models::model_info(name).expect("registered");
    (info.family, info.data.input_size)
}

#[test]
fn imagenet_resnets_train_every_parameter() -> anyhow::Result<()> {
    check_group(|n| family_and_size(n) == (ModelFamily::ResNet, 224))
}

#[test]
fn cifar_resnets_train_every_parameter() -> anyhow::Result<()> {
    check_group(|n| family_and_size(n) == (ModelFamily::ResNet, 32))
}

#[test]
fn deits_train_every_parameter() -> anyhow::Result<()> {
    check_group(|n| family_and_size(n).0 == ModelFamily::DeiT)
}

#[test]
fn every_registered_name_is_covered_by_a_group() {
    for n in model_names() {
        // The groups above cover the DeiTs and the ResNets at 224 and 32 px.
        let (family, size) = family_and_size(n);
        assert!(
            family == ModelFamily::DeiT || size == 224 || size == 32,
            "{n} is not in any gradient group"
        );
    }
}

#[test]
fn blurpool_resnet_trains_every_parameter_and_keeps_filters_fixed() -> anyhow::Result<()> {
    let options = ModelOptions {
        num_classes: Some(3),
        blurpool: true,
        ..Default::default()
    };
    let model = create_model("resnet18", &options, &Device::Cpu)?;
    let x = Tensor::randn(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu)?;
    let grads = model.forward_t(&x, true)?.sum_all()?.backward()?;
    for p in model.params().trainable() {
        assert!(grads.get(&p.var).is_some(), "{} has no gradient", p.name);
    }
    let blur: Vec<_> = model
        .params()
        .buffers()
        .filter(|b| b.name.ends_with("blur_filter"))
        .collect();
    // resnet18: layer2/3/4 each have a strided conv1 and a strided downsample.0.
    assert_eq!(
        blur.len(),
        6,
        "{:?}",
        blur.iter().map(|b| &b.name).collect::<Vec<_>>()
    );
    Ok(())
}

/// Mixed precision as the GPU runs it, with f16 standing in for bf16 on the CPU: the layers cast
/// their f32 parameters to the activations' dtype inside the graph, so the logits come out in
/// f16 while every parameter's gradient arrives in f32 (through the cast's backward).
fn check_half_activations_give_f32_gradients(name: &str) -> anyhow::Result<()> {
    let (batch, size, img_size) = input_for(name);
    let options = ModelOptions {
        num_classes: Some(3),
        img_size,
        ..Default::default()
    };
    let model = create_model(name, &options, &Device::Cpu)?;
    let n = batch * 3 * size * size;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Tensor::from_vec(x, (batch, 3, size, size), &Device::Cpu)?.to_dtype(DType::F16)?;
    let logits = model.forward_t(&x, true)?;
    assert_eq!(
        logits.dtype(),
        DType::F16,
        "{name}: logits follow the input dtype"
    );
    let w: Vec<f32> = (0..batch * 3)
        .map(|i| (i as f32 * 1.3 + 0.4).cos())
        .collect();
    let w = Tensor::from_vec(w, (batch, 3), &Device::Cpu)?;
    let loss = (logits.to_dtype(DType::F32)? * w)?.sum_all()?;
    let grads = loss.backward()?;
    for p in model.params().trainable() {
        let g = grads
            .get(&p.var)
            .unwrap_or_else(|| panic!("{name}: {} has no gradient", p.name));
        assert_eq!(g.dtype(), DType::F32, "{name}: {} gradient dtype", p.name);
        let max = g.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            max.is_finite() && max > 0.0,
            "{name}: {} gradient max {max}",
            p.name
        );
    }
    for b in model.params().buffers() {
        assert_eq!(
            b.var.dtype(),
            DType::F32,
            "{name}: buffer {} stays f32",
            b.name
        );
    }
    Ok(())
}

#[test]
fn half_precision_activations_train_every_parameter_in_f32() -> anyhow::Result<()> {
    for name in ["resnet20_cifar", "resnet18", "deit_tiny_patch4_32"] {
        check_half_activations_give_f32_gradients(name)?;
    }
    Ok(())
}

/// Channels-last input (the NHWC kernels all the way through): the same logits, the same
/// gradient for every parameter and the same running statistics as NCHW, for a stem with
/// max-pool, bottleneck and basic blocks, and BlurPool's grouped convolution.
#[test]
fn channels_last_resnets_match_nchw() -> anyhow::Result<()> {
    let cases = [
        ("resnet18", false),
        ("resnet50", false),
        ("resnet20_cifar", false),
        ("resnet18", true),
    ];
    for (name, blurpool) in cases {
        let (batch, size, _) = input_for(name);
        let options = ModelOptions {
            num_classes: Some(3),
            blurpool,
            ..Default::default()
        };
        let n = batch * 3 * size * size;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::from_vec(x, (batch, 3, size, size), &Device::Cpu)?;
        let run = |channels_last: bool| -> anyhow::Result<_> {
            let model = create_model(name, &options, &Device::Cpu)?;
            let input = match channels_last {
                true => maxsup_ops::to_channels_last(&x)?,
                false => x.clone(),
            };
            let logits = model.forward_t(&input, true)?;
            let grads = logits.sqr()?.sum_all()?.backward()?;
            let mut per_param = vec![];
            for p in model.params().trainable() {
                let g = grads.get(&p.var).map(|g| g.flatten_all()).transpose()?;
                per_param.push((p.name.clone(), g));
            }
            let buffers: Vec<Tensor> = model
                .params()
                .entries()
                .iter()
                .filter(|e| e.name.contains("running"))
                .map(|e| e.var.as_tensor().flatten_all())
                .collect::<candle_core::Result<_>>()?;
            Ok((logits, per_param, buffers))
        };
        let (l0, g0, b0) = run(false)?;
        let (l1, g1, b1) = run(true)?;
        let rel = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            Ok(d / b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6))
        };
        let what = format!("{name} (blurpool {blurpool})");
        assert!(rel(&l1, &l0)? < 1e-4, "{what}: logits");
        assert!(!b0.is_empty());
        for (a, b) in b1.iter().zip(&b0) {
            assert!(rel(a, b)? < 1e-4, "{what}: running statistics");
        }
        for ((name, a), (_, b)) in g1.iter().zip(&g0) {
            let (Some(a), Some(b)) = (a, b) else {
                panic!("{what}: {name} has no gradient");
            };
            assert!(rel(a, b)? < 1e-3, "{what}: gradient of {name}");
        }
    }
    Ok(())
}
