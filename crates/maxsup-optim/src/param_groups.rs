//! Parameter groups: which parameters get weight decay.
//!
//! The recipes this crate serves (the paper's ResNet and DeiT recipes, `maxsup_train`'s presets) all exempt
//! normalisation parameters and biases from weight decay, and a model may exempt more by name (DeiT declares
//! `pos_embed` and `cls_token` in its `ModelInfo::no_weight_decay`). timm implements this as "every parameter
//! with `ndim <= 1`, plus the model's name set", which also covers BatchNorm/LayerNorm weights and biases without
//! having to know module types; [`split_weight_decay`] applies exactly that rule, with the names the caller
//! reads from the model (this crate knows no model). The authors' Lightning code
//! used a name-substring rule instead ('bn' or 'bias' in the name); [`split_weight_decay_by_substring`]
//! reproduces it for exact replication.
//!
//! Only trainable parameters belong here: the caller passes them (for our models
//! `ParamStore::trainable()`, where each model marks its buffers, BatchNorm statistics and BlurPool
//! filters alike). A buffer handed to an optimizer would be decayed and stepped, so this crate does not
//! guess buffers from names (a suffix list goes stale as soon as a model adds one).

use candle_core::{Result, Var};

/// A named trainable parameter. The name keys the optimizer state, so it must be unique and stable across runs.
pub type NamedVar = (String, Var);

/// A set of parameters sharing one weight-decay coefficient (PyTorch's `param_groups` entry).
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// Parameters in this group, in a stable order.
    pub params: Vec<NamedVar>,
    /// Weight decay coefficient for this group (L2 for SGD, decoupled for AdamW).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group of `params` sharing `weight_decay`.
    pub fn new(params: Vec<NamedVar>, weight_decay: f64) -> Self {
        Self {
            params,
            weight_decay,
        }
    }
}

/// True when `name` equals an entry of `names` or ends with `.` + that entry (so `pos_embed` matches both
/// `pos_embed` and `model.pos_embed`).
fn name_matches(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| {
        name == *n
            || (name.len() > n.len()
                && name.ends_with(n)
                && name.as_bytes()[name.len() - n.len() - 1] == b'.')
    })
}

/// Splits parameters into `[decay, no_decay]` groups with timm's rule: no decay for every parameter with
/// `ndim <= 1` (norm weights/biases, all biases) and for names in `no_decay_names` (matched as a full name or
/// as a trailing dotted component); everything else gets `weight_decay`. Both groups are
/// sorted by name so the result does not depend on `HashMap` iteration order.
pub fn split_weight_decay<I>(
    params: I,
    weight_decay: f64,
    no_decay_names: &[&str],
) -> Result<[ParamGroup; 2]>
where
    I: IntoIterator<Item = NamedVar>,
{
    split_with(params, weight_decay, |name, var| {
        var.rank() <= 1 || name_matches(name, no_decay_names)
    })
}

/// Splits parameters into `[decay, no_decay]` groups with the authors' Lightning rule: no decay for names
/// containing any of `substrings` (the recipe uses `["bn", "bias"]`, which leaves torchvision's
/// `downsample.1.*` BatchNorm parameters decayed). Groups are sorted by name.
pub fn split_weight_decay_by_substring<I>(
    params: I,
    weight_decay: f64,
    substrings: &[&str],
) -> Result<[ParamGroup; 2]>
where
    I: IntoIterator<Item = NamedVar>,
{
    split_with(params, weight_decay, |name, _| {
        substrings.iter().any(|s| name.contains(s))
    })
}

fn split_with<I, F>(params: I, weight_decay: f64, no_decay: F) -> Result<[ParamGroup; 2]>
where
    I: IntoIterator<Item = NamedVar>,
    F: Fn(&str, &Var) -> bool,
{
    let mut all: Vec<NamedVar> = params.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = all.windows(2).find(|w| w[0].0 == w[1].0) {
        candle_core::bail!(
            "parameter name `{}` appears twice; optimizer state is keyed by name",
            w[0].0
        );
    }
    let (skip, decay): (Vec<NamedVar>, Vec<NamedVar>) =
        all.into_iter().partition(|(n, v)| no_decay(n, v));
    Ok([
        ParamGroup::new(decay, weight_decay),
        ParamGroup::new(skip, 0.0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn var(shape: &[usize]) -> Var {
        Var::zeros(shape, DType::F32, &Device::Cpu).unwrap()
    }

    fn names(g: &ParamGroup) -> Vec<&str> {
        g.params.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_name_set_exempts_1d_params_and_named_ones() {
        let params = vec![
            ("blocks.0.attn.qkv.weight".to_string(), var(&[6, 2])),
            ("blocks.0.attn.qkv.bias".to_string(), var(&[6])),
            ("norm.weight".to_string(), var(&[2])),
            ("pos_embed".to_string(), var(&[1, 5, 2])),
            ("cls_token".to_string(), var(&[1, 1, 2])),
            ("my_pos_embed".to_string(), var(&[1, 5, 2])),
        ];
        let [decay, skip] = split_weight_decay(params, 0.05, &["pos_embed", "cls_token"]).unwrap();
        assert_eq!(names(&decay), ["blocks.0.attn.qkv.weight", "my_pos_embed"]);
        assert_eq!(
            names(&skip),
            [
                "blocks.0.attn.qkv.bias",
                "cls_token",
                "norm.weight",
                "pos_embed"
            ]
        );
        assert_eq!((decay.weight_decay, skip.weight_decay), (0.05, 0.0));
    }

    #[test]
    fn substring_rule_matches_the_lightning_recipe() {
        let params = vec![
            ("layer1.0.bn1.weight".to_string(), var(&[2])),
            ("layer1.0.downsample.1.weight".to_string(), var(&[2])),
            ("fc.bias".to_string(), var(&[2])),
            ("conv1.weight".to_string(), var(&[2, 2, 1, 1])),
        ];
        let [decay, skip] = split_weight_decay_by_substring(params, 1e-4, &["bn", "bias"]).unwrap();
        assert_eq!(
            names(&decay),
            ["conv1.weight", "layer1.0.downsample.1.weight"]
        );
        assert_eq!(names(&skip), ["fc.bias", "layer1.0.bn1.weight"]);
    }

    #[test]
    fn duplicate_names_are_an_error() {
        let params = vec![
            ("w".to_string(), var(&[2, 2])),
            ("w".to_string(), var(&[2, 2])),
        ];
        let err = split_weight_decay(params, 1e-4, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`w` appears twice"), "{err}");
    }
}
