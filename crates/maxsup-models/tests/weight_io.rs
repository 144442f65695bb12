//! Weight I/O: real `torch.save` checkpoints (torchvision layout, DDP prefix + fp16 under
//! `state_dict`, timm `{"model": ...}`), safetensors round trip, and mismatch errors.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, fixture, formula_input};
use maxsup_models::deit::{DeiT, DeiTConfig};
use maxsup_models::resnet::{ResNet, ResNetConfig};
use maxsup_models::{
    create_model, load_pth, load_safetensors, read_pth_state_dict, save_safetensors,
    ImageClassifier, ModelOptions, StateDictMismatch,
};

fn expected(key: &str) -> anyhow::Result<Tensor> {
    let mut all =
        candle_core::safetensors::load(fixture("pth_expected.safetensors"), &Device::Cpu)?;
    Ok(all.remove(key).expect("key in pth_expected"))
}

fn resnet8() -> anyhow::Result<ResNet> {
    Ok(ResNet::new(
        "resnet8_cifar",
        ResNetConfig::cifar_he(8, 10)?,
        &Device::Cpu,
        1,
    )?)
}

#[test]
fn a_pth_that_candles_zip_reader_rejects_still_loads() -> anyhow::Result<()> {
    // Same weights as pth_resnet8_cifar.pth, saved under a 21-character stem.
    let path = fixture("pth_resnet8_cifar_e30.pth");
    assert!(
        candle_core::pickle::read_all_with_key(&path, None).is_err(),
        "the fixture no longer shows the problem"
    );
    let model = resnet8()?;
    load_pth(model.params(), &path)?;
    let logits = model.forward_t(&formula_input(&[2, 3, 32, 32])?, false)?;
    assert_close(
        "resnet8 from the repacked .pth",
        &logits,
        &expected("resnet8_cifar")?,
        1e-4,
    )
}

#[test]
fn torchvision_layout_pth_loads_and_reproduces_pytorch() -> anyhow::Result<()> {
    let model = resnet8()?;
    load_pth(model.params(), fixture("pth_resnet8_cifar.pth"))?;
    let logits = model.forward_t(&formula_input(&[2, 3, 32, 32])?, false)?;
    assert_close(
        "resnet8 from .pth",
        &logits,
        &expected("resnet8_cifar")?,
        1e-4,
    )
}

#[test]
fn ddp_fp16_checkpoint_under_state_dict_key_loads() -> anyhow::Result<()> {
    let names: Vec<String> = read_pth_state_dict(fixture("pth_resnet8_cifar_ddp_fp16.pth"))?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("module.")),
        "fixture should carry the DDP prefix"
    );
    let model = resnet8()?;
    load_pth(model.params(), fixture("pth_resnet8_cifar_ddp_fp16.pth"))?;
    let logits = model.forward_t(&formula_input(&[2, 3, 32, 32])?, false)?;
    assert_close(
        "resnet8 from fp16 DDP .pth",
        &logits,
        &expected("resnet8_cifar_fp16")?,
        1e-4,
    )
}

#[test]
fn timm_checkpoint_with_model_key_loads() -> anyhow::Result<()> {
    let config = DeiTConfig {
        img_size: 16,
        patch_size: 4,
        embed_dim: 32,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 4,
        num_classes: 10,
        drop_path_rate: 0.0,
    };
    let model = DeiT::new("deit_mini", config, &Device::Cpu, 0)?;
    load_pth(model.params(), fixture("pth_deit_mini_timm.pth"))?;
    let logits = model.forward_t(&formula_input(&[2, 3, 16, 16])?, false)?;
    assert_close(
        "deit mini from timm .pth",
        &logits,
        &expected("deit_mini")?,
        1e-4,
    )
}

#[test]
fn safetensors_round_trip_restores_every_tensor() -> anyhow::Result<()> {
    let opts = ModelOptions {
        num_classes: Some(10),
        ..Default::default()
    };
    let a = create_model(
        "resnet20_cifar",
        &ModelOptions {
            seed: 1,
            ..opts.clone()
        },
        &Device::Cpu,
    )?;
    // Move the running statistics away from their init so buffers are checked too.
    let x = formula_input(&[2, 3, 32, 32])?;
    a.forward_t(&x, true)?;
    let path = std::env::temp_dir().join(format!(
        "maxsup-models-roundtrip-{}.safetensors",
        std::process::id()
    ));
    save_safetensors(a.params(), &path)?;
    let b = create_model(
        "resnet20_cifar",
        &ModelOptions { seed: 2, ..opts },
        &Device::Cpu,
    )?;
    load_safetensors(b.params(), &path)?;
    std::fs::remove_file(&path)?;
    for (ea, eb) in a.params().entries().iter().zip(b.params().entries()) {
        assert_eq!(ea.name, eb.name);
        let d = (ea.var.as_tensor() - eb.var.as_tensor())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0, "{} differs after the round trip", ea.name);
    }
    assert_close(
        "logits after round trip",
        &b.forward_t(&x, false)?,
        &a.forward_t(&x, false)?,
        0.0,
    )
}

#[test]
fn mismatched_checkpoint_error_lists_missing_unexpected_and_wrong_shapes() -> anyhow::Result<()> {
    // resnet20 has more blocks than the resnet8 checkpoint (missing tensors); 100 classes
    // makes fc the wrong shape.
    let model = create_model(
        "resnet20_cifar",
        &ModelOptions {
            num_classes: Some(100),
            ..Default::default()
        },
        &Device::Cpu,
    )?;
    let err = load_pth(model.params(), fixture("pth_resnet8_cifar.pth")).unwrap_err();
    let mismatch = err
        .downcast_ref::<StateDictMismatch>()
        .expect("a StateDictMismatch");
    assert!(mismatch
        .missing
        .iter()
        .any(|(n, s)| n == "layer1.1.conv1.weight" && s == &[16, 16, 3, 3]));
    assert!(mismatch
        .wrong_shape
        .iter()
        .any(|(n, m, f)| n == "fc.weight" && m == &[100, 64] && f == &[10, 64]));
    assert!(mismatch.unexpected.is_empty(), "{mismatch}");
    let msg = err.to_string();
    assert!(
        msg.contains("pth_resnet8_cifar.pth")
            && msg.contains("fc.weight: model [100, 64], file [10, 64]"),
        "{msg}"
    );

    // The other direction: a bigger checkpoint into a smaller model gives unexpected tensors.
    let path = std::env::temp_dir().join(format!(
        "maxsup-models-r20-{}.safetensors",
        std::process::id()
    ));
    let r20 = create_model("resnet20_cifar", &ModelOptions::default(), &Device::Cpu)?;
    save_safetensors(r20.params(), &path)?;
    let err = load_safetensors(resnet8()?.params(), &path).unwrap_err();
    std::fs::remove_file(&path)?;
    let mismatch = err
        .downcast_ref::<StateDictMismatch>()
        .expect("a StateDictMismatch");
    assert!(mismatch
        .unexpected
        .iter()
        .any(|(n, _)| n == "layer3.2.bn2.running_var"));
    assert!(
        mismatch.missing.is_empty() && mismatch.wrong_shape.is_empty(),
        "{mismatch}"
    );
    Ok(())
}

#[test]
fn failed_load_leaves_the_model_unchanged() -> anyhow::Result<()> {
    let model = create_model(
        "resnet20_cifar",
        &ModelOptions {
            num_classes: Some(100),
            ..Default::default()
        },
        &Device::Cpu,
    )?;
    let before = model
        .params()
        .get("conv1.weight")
        .expect("conv1")
        .var
        .as_tensor()
        .copy()?;
    assert!(load_pth(model.params(), fixture("pth_resnet8_cifar.pth")).is_err());
    let after = model
        .params()
        .get("conv1.weight")
        .expect("conv1")
        .var
        .as_tensor();
    assert_close("conv1 untouched", after, &before, 0.0)
}

#[test]
fn unreadable_files_give_errors_naming_the_file() {
    let err = load_pth(resnet8().unwrap().params(), fixture("does_not_exist.pth")).unwrap_err();
    assert!(format!("{err:#}").contains("does_not_exist.pth"), "{err:#}");
    let err = load_safetensors(
        resnet8().unwrap().params(),
        fixture("pth_resnet8_cifar.pth"),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("pth_resnet8_cifar.pth"),
        "{err:#}"
    );
}

#[test]
fn pth_files_load_whatever_their_name_length() -> anyhow::Result<()> {
    // fixtures/gen_pth_names.py: the same state dict under stems of 1 to 64 characters.
    let mut rejected_by_candle = vec![];
    for n in 1..=64 {
        let path = fixture(&format!("pth_names/{}.pth", "w".repeat(n)));
        if candle_core::pickle::read_all_with_key(&path, None).is_err() {
            rejected_by_candle.push(n);
        }
        let mut tensors = read_pth_state_dict(&path)?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["fc.bias", "fc.weight"], "stem length {n}");
        assert_eq!(
            tensors[0].1.to_vec1::<f32>()?,
            [7.0, 8.0, 9.0],
            "stem length {n}"
        );
        assert_eq!(
            tensors[1].1.to_vec2::<f32>()?,
            [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
            "stem length {n}"
        );
    }
    eprintln!("stem lengths candle's own reader rejects: {rejected_by_candle:?}");
    Ok(())
}
