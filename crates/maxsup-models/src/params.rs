//! Named parameters and buffers of a model, in torchvision/timm state-dict order.
//!
//! Every tensor of a model is a [`candle_core::Var`] registered here under its PyTorch
//! state-dict name. Layers keep clones of the var tensors (shared storage), so updating a var in
//! place (an optimizer step, loading a checkpoint, BatchNorm's running statistics) is seen by the
//! forward pass without rebuilding the model.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::init::{Init, InitRng};

/// Whether the optimizer trains a tensor or the model maintains it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Receives gradients (PyTorch `nn.Parameter`).
    Trainable,
    /// State that is saved with the model but never trained (BatchNorm running statistics,
    /// the fixed BlurPool filter), PyTorch's registered buffers.
    Buffer,
}

/// One named tensor of a model.
#[derive(Debug, Clone)]
pub struct ParamEntry {
    /// PyTorch state-dict name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
}

/// All tensors of a model. Order is creation order, which follows PyTorch's `state_dict()`.
/// Cloning shares the underlying vars (it is a handle, not a copy of the weights).
#[derive(Debug, Clone)]
pub struct ParamStore {
    entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
    device: Device,
    dtype: DType,
}

impl ParamStore {
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// The vars to hand to an optimizer (buffers excluded).
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.trainable().map(|e| e.var.clone()).collect()
    }

    pub fn trainable(&self) -> impl Iterator<Item = &ParamEntry> {
        self.entries
            .iter()
            .filter(|e| e.kind == ParamKind::Trainable)
    }

    pub fn buffers(&self) -> impl Iterator<Item = &ParamEntry> {
        self.entries.iter().filter(|e| e.kind == ParamKind::Buffer)
    }

    /// Number of trainable scalars: what `sum(p.numel() for p in model.parameters())` gives.
    pub fn num_trainable_params(&self) -> usize {
        self.trainable().map(|e| e.var.elem_count()).sum()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Collects parameters while a model is being constructed; see [`Scope`].
pub(crate) struct ParamBuilder {
    entries: RefCell<Vec<ParamEntry>>,
    rng: RefCell<InitRng>,
    device: Device,
    dtype: DType,
}

impl ParamBuilder {
    pub(crate) fn new(device: &Device, dtype: DType, seed: u64) -> Self {
        Self {
            entries: RefCell::new(Vec::new()),
            rng: RefCell::new(InitRng::new(seed)),
            device: device.clone(),
            dtype,
        }
    }

    pub(crate) fn root(&self) -> Scope<'_> {
        Scope {
            builder: self,
            prefix: String::new(),
        }
    }

    pub(crate) fn finish(self) -> ParamStore {
        let entries = self.entries.into_inner();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        ParamStore {
            entries,
            index,
            device: self.device,
            dtype: self.dtype,
        }
    }
}

/// A dotted name prefix inside a [`ParamBuilder`], like a PyTorch sub-module path.
#[derive(Clone)]
pub(crate) struct Scope<'a> {
    builder: &'a ParamBuilder,
    prefix: String,
}

impl<'a> Scope<'a> {
    /// The child scope `prefix.name`.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Scope<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Scope {
            builder: self.builder,
            prefix,
        }
    }

    pub(crate) fn device(&self) -> &Device {
        &self.builder.device
    }

    /// A new trainable tensor `prefix.name`; returns the tensor that layers use in forward.
    pub(crate) fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let var = self.sampled(shape, &init)?;
        Ok(self
            .register(name, var, ParamKind::Trainable)?
            .as_tensor()
            .clone())
    }

    /// A new buffer filled by `init`.
    pub(crate) fn buffer(&self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let var = self.sampled(shape, &init)?;
        self.register(name, var, ParamKind::Buffer)
    }

    /// A new buffer holding `value` (converted to the model's dtype and device).
    pub(crate) fn buffer_from(&self, name: &str, value: &Tensor) -> Result<Var> {
        let t = value
            .to_device(&self.builder.device)?
            .to_dtype(self.builder.dtype)?;
        self.register(name, Var::from_tensor(&t)?, ParamKind::Buffer)
    }

    fn sampled(&self, shape: &[usize], init: &Init) -> Result<Var> {
        let n = shape.iter().product();
        let values = self.builder.rng.borrow_mut().sample(init, n);
        // Var::from_vec avoids the extra copy Var::from_tensor makes of a non-var tensor.
        let var = Var::from_vec(values, shape, &self.builder.device)?;
        if self.builder.dtype == DType::F32 {
            Ok(var)
        } else {
            Var::from_tensor(&var.as_tensor().to_dtype(self.builder.dtype)?)
        }
    }

    fn register(&self, name: &str, var: Var, kind: ParamKind) -> Result<Var> {
        let full = self.pp(name).prefix;
        let mut entries = self.builder.entries.borrow_mut();
        if entries.iter().any(|e| e.name == full) {
            candle_core::bail!("model construction registered `{full}` twice");
        }
        entries.push(ParamEntry {
            name: full,
            var: var.clone(),
            kind,
        });
        Ok(var)
    }
}
