//! Exponential moving average of model weights, timm `ModelEmaV2` semantics (DeiT's `--model-ema`).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Result, Tensor, Var};
use maxsup_ops::multi_tensor;

/// Moving average of every named model tensor: parameters AND buffers, since timm averages the whole
/// `state_dict` (BatchNorm running statistics included). Each [`ModelEma::update`] does
/// `ema = decay * ema + (1 - decay) * model`; integer tensors (`num_batches_tracked`) are averaged in f32 and
/// truncated back, exactly what PyTorch's `ema_v.copy_(float_result)` does.
///
/// The EMA holds deep copies, so in-place `Var::set` updates of the model never leak into it.
#[derive(Debug)]
pub struct ModelEma {
    decay: f64,
    averages: BTreeMap<String, Tensor>,
}

impl ModelEma {
    /// Starts the average at a copy of `model` (timm deep-copies the model at construction).
    pub fn new<'a, I>(model: I, decay: f64) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a Tensor)>,
    {
        check_decay(decay)?;
        let mut averages = BTreeMap::new();
        for (name, t) in model {
            if averages
                .insert(name.to_string(), t.detach().copy()?)
                .is_some()
            {
                candle_core::bail!("model EMA: tensor name `{name}` appears twice");
            }
        }
        Ok(Self { decay, averages })
    }

    /// Restores an EMA from [`ModelEma::export_state`] output.
    pub fn from_state(state: HashMap<String, Tensor>, decay: f64) -> Result<Self> {
        check_decay(decay)?;
        let averages = state
            .into_iter()
            .map(|(k, t)| Ok((k, t.copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, averages })
    }

    /// `ema = decay * ema + (1 - decay) * model` for every tensor. `model` must provide exactly the names the
    /// EMA was built with, with the same shapes and dtypes; otherwise nothing is changed and the error names
    /// the offending tensor. f32 averages on CUDA are updated in place by one multi-tensor kernel per 32
    /// tensors (the same floats as the composed update); a handle from [`ModelEma::get`] sees the change.
    pub fn update<'a, I>(&mut self, model: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, &'a Tensor)>,
    {
        let decay = self.decay;
        let mut in_place = Vec::new();
        for (name, m) in self.matched(model)? {
            let ema = &self.averages[&name];
            if multi_tensor::applies(ema) && multi_tensor::applies(&m) {
                in_place.push((ema.clone(), m));
                continue;
            }
            let next = if ema.dtype().is_float() {
                (ema.affine(decay, 0.0)? + m.affine(1.0 - decay, 0.0)?)?
            } else {
                let (e32, m32) = (ema.to_dtype(DType::F32)?, m.to_dtype(DType::F32)?);
                (e32.affine(decay, 0.0)? + m32.affine(1.0 - decay, 0.0)?)?.to_dtype(ema.dtype())?
            };
            self.averages.insert(name, next);
        }
        let pairs: Vec<(&Tensor, &Tensor)> = in_place.iter().map(|(e, m)| (e, m)).collect();
        multi_tensor::ema_step(decay, &pairs)
    }

    /// Copies `model` into the EMA (timm `ModelEmaV2.set`).
    pub fn set<'a, I>(&mut self, model: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, &'a Tensor)>,
    {
        for (name, m) in self.matched(model)? {
            self.averages.insert(name, m.copy()?);
        }
        Ok(())
    }

    /// Writes the averaged values into the model's `Var`s (e.g. to evaluate the EMA weights). Every var
    /// must have an EMA entry of the same shape.
    pub fn copy_into<'a, I>(&self, vars: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, &'a Var)>,
    {
        for (name, var) in vars {
            let avg = self.get(name).ok_or_else(|| missing(name))?;
            var.set(&avg.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// The averaged tensor for `name` (on CUDA updated in place by [`ModelEma::update`]: `copy` it to keep
    /// a snapshot).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.averages.get(name)
    }

    /// All averaged tensors, by name.
    pub fn averages(&self) -> &BTreeMap<String, Tensor> {
        &self.averages
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Changes the decay for later updates (e.g. a warm-up of the decay).
    pub fn set_decay(&mut self, decay: f64) -> Result<()> {
        check_decay(decay)?;
        self.decay = decay;
        Ok(())
    }

    /// Deep copies of the averages keyed by model tensor name, for a safetensors checkpoint.
    pub fn export_state(&self) -> Result<HashMap<String, Tensor>> {
        self.averages
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.copy()?)))
            .collect()
    }

    /// The model's tensors by EMA name, on the EMA's device, after checking that they name every
    /// average exactly once with its shape and dtype (so a failed check changes nothing).
    fn matched<'a, I>(&self, model: I) -> Result<Vec<(String, Tensor)>>
    where
        I: IntoIterator<Item = (&'a str, &'a Tensor)>,
    {
        let mut seen = BTreeMap::new();
        for (name, m) in model {
            let ema = self.averages.get(name).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "model EMA: model tensor `{name}` is not in the EMA"
                ))
            })?;
            if ema.dims() != m.dims() || ema.dtype() != m.dtype() {
                candle_core::bail!(
                    "model EMA: `{name}` is {:?} {:?} in the model but {:?} {:?} in the EMA",
                    m.dtype(),
                    m.dims(),
                    ema.dtype(),
                    ema.dims()
                );
            }
            let m = m.detach().to_device(ema.device())?;
            if seen.insert(name.to_string(), m).is_some() {
                candle_core::bail!("model EMA: model tensor `{name}` given twice");
            }
        }
        if let Some(name) = self.averages.keys().find(|k| !seen.contains_key(*k)) {
            return Err(missing(name));
        }
        Ok(seen.into_iter().collect())
    }
}

fn missing(name: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "model EMA: tensor `{name}` is missing on one side (model vs EMA)"
    ))
}

fn check_decay(decay: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&decay) {
        candle_core::bail!("model EMA decay must lie in [0, 1], got {decay}");
    }
    Ok(())
}
