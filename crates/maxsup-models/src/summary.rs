//! Parameter counts per top-level module, for `maxsup inspect-model` and sanity checks.

use crate::params::{ParamKind, ParamStore};

/// Scalars held by one top-level module (`conv1`, `layer3`, `blocks`, `head`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    pub module: String,
    /// Trainable scalars (what PyTorch counts as parameters).
    pub trainable: usize,
    /// Buffer scalars (BatchNorm running statistics, BlurPool filters).
    pub buffers: usize,
    /// Number of named tensors.
    pub tensors: usize,
}

/// Groups the model's tensors by the first component of their name, in state-dict order.
pub fn module_summary(params: &ParamStore) -> Vec<ModuleSummary> {
    let mut out: Vec<ModuleSummary> = Vec::new();
    for e in params.entries() {
        let module = e.name.split('.').next().unwrap_or(&e.name);
        let idx = match out.iter().position(|m| m.module == module) {
            Some(i) => i,
            None => {
                out.push(ModuleSummary {
                    module: module.to_string(),
                    trainable: 0,
                    buffers: 0,
                    tensors: 0,
                });
                out.len() - 1
            }
        };
        let m = &mut out[idx];
        m.tensors += 1;
        match e.kind {
            ParamKind::Trainable => m.trainable += e.var.elem_count(),
            ParamKind::Buffer => m.buffers += e.var.elem_count(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create_model, ModelOptions};

    #[test]
    fn resnet20_groups_sum_to_the_total() {
        let m = create_model(
            "resnet20_cifar",
            &ModelOptions::default(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let s = module_summary(m.params());
        let names: Vec<_> = s.iter().map(|m| m.module.as_str()).collect();
        assert_eq!(names, ["conv1", "bn1", "layer1", "layer2", "layer3", "fc"]);
        assert_eq!(
            s.iter().map(|m| m.trainable).sum::<usize>(),
            m.params().num_trainable_params()
        );
        assert_eq!(s[5].trainable, 64 * 10 + 10);
        assert_eq!(
            s[1],
            ModuleSummary {
                module: "bn1".into(),
                trainable: 32,
                buffers: 32,
                tensors: 4
            }
        );
    }
}
