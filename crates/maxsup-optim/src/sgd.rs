//! SGD with momentum, Nesterov and L2 weight decay, matching `torch.optim.SGD` (dampening 0).
//!
//! candle-nn's `SGD` has no momentum or weight decay, which every ResNet recipe of the paper needs.

use candle_core::{backprop::GradStore, Result, Tensor, Var};

use maxsup_ops::multi_tensor;

use crate::optimizer::Optimizer;
use crate::param_groups::ParamGroup;
use crate::params::ParamTable;
use crate::sgd_cpu;
use crate::state::{adopt_state_tensor, in_place_state, split_state_key, OptimizerState};

/// State slot name of the momentum buffer (`<param name>.momentum_buffer`, as in PyTorch's state dict).
pub const MOMENTUM_BUFFER: &str = "momentum_buffer";

/// Hyper-parameters of [`Sgd`] other than the per-group weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Initial learning rate (the schedule usually overrides it through [`Optimizer::set_lr`]).
    pub lr: f64,
    /// Momentum factor (0 disables the buffer).
    pub momentum: f64,
    /// Nesterov momentum (requires `momentum > 0`, as in PyTorch).
    pub nesterov: bool,
}

/// `torch.optim.SGD(groups, lr, momentum, dampening=0, nesterov)` with per-group `weight_decay`:
/// `d = g + wd*p; buf = d` on a parameter's first step, else `buf = momentum*buf + d`;
/// `d = d + momentum*buf` (Nesterov) or `d = buf`; `p -= lr*d`.
#[derive(Debug)]
pub struct Sgd {
    table: ParamTable,
    config: SgdConfig,
    /// Momentum buffer per parameter, created on the parameter's first gradient.
    buffers: Vec<Option<Momentum>>,
}

/// A momentum buffer: host memory for CPU f32 parameters (the fused pass updates it together with
/// the parameter), a tensor on the parameter's device otherwise (and as imported from a
/// checkpoint, until the first step).
#[derive(Clone, Debug)]
enum Momentum {
    Host(Vec<f32>),
    Tensor(Tensor),
}

impl Momentum {
    /// The buffer as a tensor shaped and placed like `param`.
    fn to_tensor(&self, param: &Tensor) -> Result<Tensor> {
        match self {
            Momentum::Host(v) => Tensor::from_slice(v, param.shape(), param.device()),
            Momentum::Tensor(t) => t.copy(),
        }
    }
}

impl Sgd {
    /// Builds the optimizer; errors on duplicate names, non-float parameters, negative/non-finite hyper-parameters
    /// or Nesterov without momentum.
    pub fn new(groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Self> {
        if !(config.lr.is_finite() && config.lr >= 0.0) {
            candle_core::bail!(
                "SGD learning rate must be finite and >= 0, got {}",
                config.lr
            );
        }
        if !(config.momentum.is_finite() && config.momentum >= 0.0) {
            candle_core::bail!(
                "SGD momentum must be finite and >= 0, got {}",
                config.momentum
            );
        }
        if config.nesterov && config.momentum == 0.0 {
            candle_core::bail!("Nesterov momentum requires momentum > 0");
        }
        let table = ParamTable::new(groups)?;
        let buffers = vec![None; table.params.len()];
        Ok(Self {
            table,
            config,
            buffers,
        })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> SgdConfig {
        self.config
    }

    fn update_one(&mut self, i: usize, grad: &Tensor) -> Result<()> {
        let SgdConfig {
            lr,
            momentum,
            nesterov,
        } = self.config;
        let param = &self.table.params[i];
        // Detached: arithmetic on the tracked `Var` itself would record an autograd graph that the
        // momentum buffer keeps alive from step to step (memory grows every step).
        let p = &param.var.as_tensor().detach();
        let grad = grad.detach();
        if momentum != 0.0 && sgd_cpu::applies(p, &grad) {
            // A zero buffer makes the first step's `momentum * 0 + d` exactly PyTorch's `buf = d`.
            let mut buf = match self.buffers[i].take() {
                Some(Momentum::Host(v)) => v,
                Some(Momentum::Tensor(t)) => t.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0f32; p.elem_count()],
            };
            let step = sgd_cpu::Step {
                lr: lr as f32,
                momentum: momentum as f32,
                weight_decay: param.weight_decay as f32,
                nesterov,
            };
            // In place on the `Var`'s storage, so the model's clone of it sees the update.
            let result = sgd_cpu::update(step, p, &grad, &mut buf);
            self.buffers[i] = Some(Momentum::Host(buf));
            return result;
        }
        let buf = match self.buffers[i].take() {
            Some(Momentum::Tensor(t)) => Some(t),
            Some(host) => Some(host.to_tensor(p)?),
            None => None,
        };
        let (p_new, buf) = composed_update(self.config, param.weight_decay, p, grad, buf)?;
        self.buffers[i] = buf.map(Momentum::Tensor);
        // `Var::set` writes in place, so the model's clone of this `Var` sees the update.
        param.var.set(&p_new)
    }
}

/// The update from candle ops (any device and dtype): the new parameter and momentum buffer.
fn composed_update(
    config: SgdConfig,
    weight_decay: f64,
    p: &Tensor,
    mut d: Tensor,
    buf: Option<Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let SgdConfig {
        lr,
        momentum,
        nesterov,
    } = config;
    if weight_decay != 0.0 {
        d = (d + p.affine(weight_decay, 0.0)?)?;
    }
    let mut new_buf = None;
    if momentum != 0.0 {
        let buf = match buf {
            None => d.copy()?,
            Some(buf) => (buf.affine(momentum, 0.0)? + &d)?,
        };
        d = if nesterov {
            (d + buf.affine(momentum, 0.0)?)?
        } else {
            buf.clone()
        };
        new_buf = Some(buf);
    }
    Ok(((p - d.affine(lr, 0.0)?)?, new_buf))
}

impl Sgd {
    /// Whether parameter `i` and its gradient take the multi-tensor CUDA update (which keeps a
    /// momentum buffer: without momentum the composed update is one op fewer and rare).
    fn takes_multi_tensor(&self, i: usize, grad: &Tensor) -> bool {
        self.config.momentum != 0.0 && self.table.multi_tensor_eligible(i, grad)
    }

    /// One multi-tensor launch (per 32 parameters) for every CUDA f32 parameter: the same floats
    /// as [`composed_update`], a few kernels per step instead of ~8 per parameter.
    fn update_multi_tensor(&mut self, batch: &[(usize, Tensor)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut buffers = Vec::with_capacity(batch.len());
        for &(i, _) in batch {
            let p = self.table.params[i].var.as_tensor();
            let buf = match self.buffers[i].take() {
                Some(Momentum::Tensor(t)) => in_place_state(t, p)?,
                Some(host) => host.to_tensor(p)?,
                // Zeros: the first update then sets the buffer to `d`, PyTorch's `buf = d`.
                None => p.zeros_like()?,
            };
            // A handle on the same storage: the update below writes the stored buffer.
            buffers.push(buf.clone());
            self.buffers[i] = Some(Momentum::Tensor(buf));
        }
        let tensors: Vec<multi_tensor::SgdTensors> = batch
            .iter()
            .zip(&buffers)
            .map(|((i, grad), buf)| {
                let param = &self.table.params[*i];
                multi_tensor::SgdTensors {
                    param: param.var.as_tensor(),
                    grad,
                    momentum_buffer: buf,
                    weight_decay: param.weight_decay,
                }
            })
            .collect();
        let SgdConfig {
            lr,
            momentum,
            nesterov,
        } = self.config;
        let step = multi_tensor::SgdMomentum {
            lr,
            momentum,
            nesterov,
        };
        multi_tensor::sgd_momentum_step(step, &tensors)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (batch, single): (Vec<_>, Vec<_>) = self
            .table
            .gradients(grads)
            .into_iter()
            .partition(|(i, g)| self.takes_multi_tensor(*i, g));
        for (i, grad) in single {
            self.update_one(i, &grad)?;
        }
        self.update_multi_tensor(&batch)
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn vars(&self) -> Vec<Var> {
        self.table.vars()
    }

    fn export_state(&self) -> Result<OptimizerState> {
        let mut state = OptimizerState::default();
        state.scalars.insert("lr".to_string(), self.config.lr);
        for (param, buf) in self.table.params.iter().zip(&self.buffers) {
            if let Some(buf) = buf {
                let t = buf.to_tensor(param.var.as_tensor())?;
                state
                    .tensors
                    .insert(format!("{}.{MOMENTUM_BUFFER}", param.name), t);
            }
        }
        Ok(state)
    }

    fn import_state(&mut self, state: &OptimizerState) -> Result<()> {
        let mut buffers = vec![None; self.table.params.len()];
        for (key, t) in &state.tensors {
            let (name, _) = split_state_key(key, &[MOMENTUM_BUFFER])?;
            let i = self.table.position(name)?;
            buffers[i] = Some(Momentum::Tensor(adopt_state_tensor(
                key,
                t,
                self.table.params[i].var.as_tensor(),
            )?));
        }
        self.config.lr = state.scalar("lr")?;
        self.buffers = buffers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Optimizer state must not hold autograd graphs: a buffer derived from the tracked `Var`
    /// would keep every previous step's graph alive and memory would grow without bound.
    #[test]
    fn momentum_buffers_hold_no_autograd_graph() -> Result<()> {
        let w = Var::new(&[1f32, -2.0, 3.0], &Device::Cpu)?;
        let named = vec![("w".to_string(), w.clone())];
        let mut sgd = Sgd::new(
            vec![ParamGroup::new(named, 0.1)],
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
        )?;
        for _ in 0..2 {
            let grads = w.as_tensor().sqr()?.sum_all()?.backward()?;
            sgd.step(&grads)?;
        }
        for buf in sgd.buffers.iter().flatten() {
            if let Momentum::Tensor(t) = buf {
                assert!(!t.track_op());
            }
        }
        Ok(())
    }

    /// Host-held momentum buffers survive export and import: a restored optimizer takes the
    /// same next step as the original, to the bit.
    #[test]
    fn host_momentum_buffers_round_trip_through_state() -> Result<()> {
        let dev = Device::Cpu;
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
        };
        let make = |init: &[f32]| -> Result<(Var, Sgd)> {
            let w = Var::new(init, &dev)?;
            let groups = vec![ParamGroup::new(vec![("w".to_string(), w.clone())], 1e-4)];
            Ok((w.clone(), Sgd::new(groups, config)?))
        };
        let (w, mut sgd) = make(&[1.0, -2.0, 3.0, 0.5])?;
        for _ in 0..2 {
            sgd.step(&w.as_tensor().sqr()?.sum_all()?.backward()?)?;
        }
        assert!(matches!(sgd.buffers[0], Some(Momentum::Host(_))));
        let (w2, mut restored) = make(&w.as_tensor().to_vec1::<f32>()?)?;
        restored.import_state(&sgd.export_state()?)?;
        sgd.step(&w.as_tensor().sqr()?.sum_all()?.backward()?)?;
        restored.step(&w2.as_tensor().sqr()?.sum_all()?.backward()?)?;
        assert_eq!(
            w.as_tensor().to_vec1::<f32>()?,
            w2.as_tensor().to_vec1::<f32>()?
        );
        Ok(())
    }

    /// The fused CPU passes against the composed update, value for value over three steps, with
    /// and without Nesterov and weight decay, on a parameter longer than one parallel chunk.
    #[test]
    fn fused_cpu_update_matches_composed_update() -> Result<()> {
        let dev = Device::Cpu;
        let n = 40_000;
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        for (nesterov, wd) in [(true, 1e-4), (false, 1e-4), (true, 0.0), (false, 0.0)] {
            let config = SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                nesterov,
            };
            let w = Var::new(init.as_slice(), &dev)?;
            let mut sgd = Sgd::new(
                vec![ParamGroup::new(vec![("w".to_string(), w.clone())], wd)],
                config,
            )?;
            let (mut p_ref, mut buf_ref) = (Tensor::new(init.as_slice(), &dev)?, None);
            for step in 0..3 {
                let grads = (w.as_tensor().sqr()? * (1.0 + step as f64))?
                    .sum_all()?
                    .backward()?;
                let g = grads.get(w.as_tensor()).expect("w has a gradient").copy()?;
                sgd.step(&grads)?;
                let (p_new, buf_new) = composed_update(config, wd, &p_ref, g, buf_ref)?;
                (p_ref, buf_ref) = (p_new, buf_new);
                let (got, want) = (w.as_tensor().to_vec1::<f32>()?, p_ref.to_vec1::<f32>()?);
                let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "nesterov={nesterov} wd={wd} step {step}");
                let buf = sgd.buffers[0].as_ref().expect("a momentum buffer");
                let buf = buf.to_tensor(w.as_tensor())?.to_vec1::<f32>()?;
                assert_eq!(buf, buf_ref.as_ref().unwrap().to_vec1::<f32>()?);
            }
        }
        Ok(())
    }
}
