//! `load_model_weights` gives the trained or the EMA weights of a training checkpoint, and
//! refuses EMA where there is none.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use maxsup_analysis::{load_model_weights, WeightSet};
use maxsup_train::{save_checkpoint, CheckpointTensors, RunState, TrainConfig};

fn first_weight(set: WeightSet, path: &std::path::Path) -> anyhow::Result<Vec<f32>> {
    let loaded = load_model_weights(path, None, set, &Device::Cpu)?;
    let e = &loaded.model.params().entries()[0];
    Ok(e.var.flatten_all()?.to_vec1::<f32>()?)
}

#[test]
fn ema_weights_load_from_a_training_checkpoint_and_only_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig::preset("cifar10-resnet20").unwrap();
    let model = maxsup_train::build_model(&config, 10, &Device::Cpu).unwrap();
    let trained: HashMap<String, Tensor> = model
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.var.as_tensor().copy().unwrap()))
        .collect();
    let ema: HashMap<String, Tensor> = trained
        .iter()
        .map(|(n, t)| (n.clone(), t.affine(0.5, 1.0).unwrap()))
        .collect();
    let state = RunState {
        config,
        next_epoch: 1,
        global_step: 10,
        best_top1: 0.1,
        best_epoch: Some(0),
        last_eval: None,
        last_ema_eval: None,
    };
    let path = dir.path().join("last.safetensors");
    let mut tensors = CheckpointTensors {
        model: trained,
        ema,
        ..Default::default()
    };
    save_checkpoint(&path, &tensors, &state).unwrap();
    let w = first_weight(WeightSet::Trained, &path).unwrap();
    let averaged = first_weight(WeightSet::Ema, &path).unwrap();
    for (a, b) in w.iter().zip(&averaged) {
        assert_eq!(*b, 0.5 * a + 1.0);
    }

    tensors.ema.clear();
    save_checkpoint(&path, &tensors, &state).unwrap();
    let e = format!("{:#}", first_weight(WeightSet::Ema, &path).unwrap_err());
    assert!(e.contains("--ema") && e.contains("no EMA weights"), "{e}");

    let plain = dir.path().join("plain.safetensors");
    candle_core::safetensors::save(&tensors.model, &plain).unwrap();
    let e = load_model_weights(&plain, Some("resnet20_cifar"), WeightSet::Ema, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--ema applies to training checkpoints"), "{e}");
}
