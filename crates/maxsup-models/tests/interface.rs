//! The shared interface: stage shapes, options validation, drop path behaviour, thread safety.

mod common;

use candle_core::Device;
use common::{assert_close, formula_input};
use maxsup_models::deit::DeiT;
use maxsup_models::{create_model, ImageClassifier, ModelOptions};

fn opts(classes: usize) -> ModelOptions {
    ModelOptions {
        num_classes: Some(classes),
        ..Default::default()
    }
}

#[test]
fn models_are_send_sync_trait_objects() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn ImageClassifier>();
    let m: std::sync::Arc<dyn ImageClassifier> =
        create_model("resnet20_cifar", &opts(10), &Device::Cpu)
            .unwrap()
            .into();
    let m2 = m.clone();
    let h = std::thread::spawn(move || m2.num_classes());
    assert_eq!(h.join().unwrap(), 10);
}

#[test]
fn last_stage_shapes_follow_the_topology() -> anyhow::Result<()> {
    let cases = [
        ("resnet18", 64, vec![2, 512, 2, 2], 512),
        ("resnet18_cifar", 32, vec![2, 512, 4, 4], 512),
        ("resnet20_cifar", 32, vec![2, 64, 8, 8], 64),
        ("resnet32_cifar", 32, vec![2, 64, 8, 8], 64),
    ];
    for (name, size, stage, features) in cases {
        let m = create_model(name, &opts(7), &Device::Cpu)?;
        let x = formula_input(&[2, 3, size, size])?;
        assert_eq!(
            m.forward_stage(&x, false)?.dims(),
            stage.as_slice(),
            "{name}"
        );
        assert_eq!(m.num_features(), features, "{name}");
        assert_eq!(m.forward_t(&x, false)?.dims(), &[2, 7], "{name}");
    }
    Ok(())
}

#[test]
fn invalid_options_are_rejected_with_reasons() {
    let dev = &Device::Cpu;
    let e = create_model(
        "resnet50",
        &ModelOptions {
            drop_path_rate: 0.1,
            ..Default::default()
        },
        dev,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("drop_path_rate"), "{e}");
    let e = create_model(
        "deit_tiny_patch4_32",
        &ModelOptions {
            blurpool: true,
            ..Default::default()
        },
        dev,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("blurpool"), "{e}");
    let e = create_model(
        "deit_tiny_patch4_32",
        &ModelOptions {
            img_size: Some(30),
            ..Default::default()
        },
        dev,
    )
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("multiple of patch_size"), "{e:#}");
    let e = create_model("resnet21", &ModelOptions::default(), dev)
        .err()
        .unwrap();
    assert!(e.to_string().contains("resnet20_cifar"), "{e}");
    let m = create_model("deit_tiny_patch4_32", &opts(10), dev).unwrap();
    let e = m
        .forward_t(&formula_input(&[1, 3, 64, 64]).unwrap(), false)
        .unwrap_err();
    assert!(e.to_string().contains("32x32"), "{e}");
}

#[test]
fn drop_path_follows_timm_schedule_and_only_acts_in_training() -> anyhow::Result<()> {
    let options = ModelOptions {
        num_classes: Some(10),
        drop_path_rate: 0.5,
        img_size: Some(16),
        ..Default::default()
    };
    let m = create_model("deit_tiny_patch4_32", &options, &Device::Cpu)?;
    let x = formula_input(&[8, 3, 16, 16])?;
    let eval1 = m.forward_t(&x, false)?;
    let eval2 = m.forward_t(&x, false)?;
    assert_close("eval is deterministic", &eval1, &eval2, 0.0)?;
    // With rate up to 0.5 over 12 blocks, two training passes almost surely drop different paths.
    let t1 = m.forward_t(&x, true)?;
    let t2 = m.forward_t(&x, true)?;
    let d = (t1 - t2)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(d > 0.0, "training passes identical: drop path inactive");

    let deit = DeiT::new(
        "d",
        maxsup_models::deit::DeiTConfig {
            drop_path_rate: 0.11,
            ..maxsup_models::deit::DeiTConfig::tiny(32, 4, 10)
        },
        &Device::Cpu,
        0,
    )?;
    let rates = deit.block_drop_path_rates();
    assert_eq!(rates.len(), 12);
    for (i, r) in rates.iter().enumerate() {
        assert!((r - 0.11 * i as f64 / 11.0).abs() < 1e-12);
    }
    Ok(())
}

#[test]
fn equal_seeds_give_equal_weights_and_different_seeds_do_not() -> anyhow::Result<()> {
    let build = |seed| {
        create_model(
            "resnet20_cifar",
            &ModelOptions {
                seed,
                ..Default::default()
            },
            &Device::Cpu,
        )
    };
    let (a, b, c) = (build(3)?, build(3)?, build(4)?);
    let w = |m: &dyn ImageClassifier| {
        m.params()
            .get("layer2.0.conv1.weight")
            .unwrap()
            .var
            .as_tensor()
            .clone()
    };
    assert_close("same seed", &w(a.as_ref()), &w(b.as_ref()), 0.0)?;
    assert!(
        (w(a.as_ref()) - w(c.as_ref()))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?
            > 0.0
    );
    Ok(())
}

/// Every registry entry declares facts its built model bears out: the classifier weight is
/// `[classes, features]`, the no-weight-decay names are parameters, a spatial stage is what
/// `dense_logits` accepts, and the data config's size is the size the model runs at.
#[test]
fn declared_model_info_matches_the_built_model() -> anyhow::Result<()> {
    use maxsup_models::{model_info, model_names, ModelFamily, Normalization};
    for name in model_names() {
        let declared = model_info(name).expect("registered");
        let m = create_model(name, &opts(5), &Device::Cpu)?;
        assert_eq!(m.info(), &declared, "{name}");
        let params = m.params();
        let w = params
            .get(&declared.classifier_weight())
            .unwrap_or_else(|| panic!("{name}: no {}", declared.classifier_weight()));
        assert_eq!(w.var.dims(), &[5, m.num_features()], "{name}");
        for n in declared.no_weight_decay {
            assert!(params.get(n).is_some(), "{name}: no parameter {n}");
        }
        assert_eq!(
            declared.family == ModelFamily::ResNet,
            declared.spatial_stage,
            "{name}"
        );
        let small = declared.data.input_size == 32;
        assert_eq!(
            declared.data.normalization == Normalization::Cifar10,
            small,
            "{name}"
        );
        if small {
            let x = formula_input(&[1, 3, 32, 32])?;
            let stage = m.forward_stage(&x, false)?;
            assert_eq!(
                m.dense_logits(&stage).is_ok(),
                declared.spatial_stage,
                "{name}"
            );
        }
    }
    Ok(())
}
