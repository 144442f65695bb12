//! Loading a model for analysis from whatever checkpoint the user has.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use maxsup_models::{
    create_model, load_state_dict, read_pth_state_dict, ImageClassifier, ModelOptions,
};
use maxsup_train::{
    build_model, is_training_checkpoint, load_checkpoint, CheckpointTensors, RunState, TrainConfig,
};

/// A model with its weights, plus the training configuration when the file was a training
/// checkpoint (it says which model and dataset the weights belong to).
pub struct LoadedModel {
    pub model: Box<dyn ImageClassifier>,
    pub config: Option<TrainConfig>,
}

/// Which weights of a training checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightSet {
    /// The trained model's weights.
    #[default]
    Trained,
    /// The exponential moving average of the weights (runs trained with `--ema-decay`), as
    /// timm's `--model-ema` keeps and evaluates it.
    Ema,
}

/// Loads `weights`: a training checkpoint of `train-conv`/`train-vit` (model name and dataset are
/// read from it), or a plain state dict as safetensors or PyTorch `.pth` (torchvision/timm names,
/// `model`/`state_dict` keys and DDP `module.` prefixes handled), which needs `model_name`. The
/// number of classes is read from the classifier weight.
pub fn load_model(
    weights: &Path,
    model_name: Option<&str>,
    device: &Device,
) -> Result<LoadedModel> {
    load_model_weights(weights, model_name, WeightSet::Trained, device)
}

/// [`load_model`] choosing the trained or the EMA weights of a training checkpoint; plain weight
/// files hold one set, so [`WeightSet::Ema`] is refused for them.
pub fn load_model_weights(
    weights: &Path,
    model_name: Option<&str>,
    set: WeightSet,
    device: &Device,
) -> Result<LoadedModel> {
    if is_training_checkpoint(weights) {
        // Read on the CPU: the checkpoint also holds the optimizer's moments (and the EMA), and
        // only the chosen weights go to `device`, as load_state_dict moves them.
        let (tensors, state): (CheckpointTensors, RunState) =
            load_checkpoint(weights, &Device::Cpu)?;
        let config = state.config;
        if let Some(name) = model_name.filter(|n| *n != config.model) {
            bail!(
                "{} is a training checkpoint of `{}`; --model {name} does not apply to it",
                weights.display(),
                config.model
            );
        }
        let chosen = match set {
            WeightSet::Trained => tensors.model,
            WeightSet::Ema if tensors.ema.is_empty() => bail!(
                "{}: --ema: the checkpoint has no EMA weights (the run was trained without \
                 --ema-decay)",
                weights.display()
            ),
            WeightSet::Ema => tensors.ema,
        };
        let state_dict: Vec<(String, Tensor)> = chosen.into_iter().collect();
        let classes = num_classes(&state_dict, &config.model, weights)?;
        let model = build_model(&config, classes, device)?;
        load_state_dict(model.params(), state_dict, &weights.display().to_string())?;
        return Ok(LoadedModel {
            model,
            config: Some(config),
        });
    }
    if set == WeightSet::Ema {
        bail!(
            "{}: --ema applies to training checkpoints; a plain weight file holds one set of weights",
            weights.display()
        );
    }
    let Some(name) = model_name else {
        bail!(
            "{} is a plain weight file: say which model it is with --model",
            weights.display()
        );
    };
    let state_dict = read_state_dict(weights)?;
    let options = ModelOptions {
        num_classes: Some(num_classes(&state_dict, name, weights)?),
        ..ModelOptions::default()
    };
    let model = create_model(name, &options, device)?;
    load_state_dict(model.params(), state_dict, &weights.display().to_string())?;
    Ok(LoadedModel {
        model,
        config: None,
    })
}

fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let is_pth = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pth" | "pt" | "bin" | "tar")
    );
    if is_pth {
        return read_pth_state_dict(path);
    }
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading safetensors {}", path.display()))?;
    Ok(map.into_iter().collect())
}

/// K from the weight of the classifier `model` declares (`fc` for ResNets, `head` for DeiTs).
fn num_classes(state_dict: &[(String, Tensor)], model: &str, origin: &Path) -> Result<usize> {
    let Some(info) = maxsup_models::model_info(model) else {
        bail!(
            "unknown model `{model}`; known models: {}",
            maxsup_models::model_names().join(", ")
        );
    };
    let weight = info.classifier_weight();
    let classifier = state_dict
        .iter()
        .find(|(n, _)| n.strip_prefix("module.").unwrap_or(n) == weight);
    match classifier {
        Some((_, w)) if w.rank() == 2 && w.dims()[0] > 0 => Ok(w.dims()[0]),
        Some((name, w)) => bail!(
            "{}: classifier weight `{name}` has shape {:?}; expected [classes, features]",
            origin.display(),
            w.dims()
        ),
        None => bail!(
            "{}: no classifier weight `{weight}` (of `{model}`) in the state dict",
            origin.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_classifier_weight_that_is_not_a_matrix_is_an_error_naming_it() {
        let origin = Path::new("x.safetensors");
        let scalar = Tensor::new(1f32, &Device::Cpu).unwrap();
        let e = num_classes(&[("fc.weight".into(), scalar)], "resnet50", origin)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`fc.weight` has shape []") && e.contains("x.safetensors"),
            "{e}"
        );
        let ok = Tensor::zeros((7, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            num_classes(
                &[("module.head.weight".into(), ok.clone())],
                "deit_small_patch16_224",
                origin
            )
            .unwrap(),
            7
        );
        // A DeiT's weights offered as a ResNet's: the error names the classifier looked for.
        let e = num_classes(&[("head.weight".into(), ok)], "resnet50", origin)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no classifier weight `fc.weight` (of `resnet50`)"),
            "{e}"
        );
    }
}
