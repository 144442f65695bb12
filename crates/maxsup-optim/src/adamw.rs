//! AdamW with decoupled weight decay, matching `torch.optim.AdamW` (amsgrad off, single-tensor path).
//!
//! candle-nn has an AdamW, but it applies one weight decay to every parameter; the DeiT recipe needs
//! per-group decay (none for norms, biases, `pos_embed`, `cls_token`) and resumable state.

use candle_core::{backprop::GradStore, Result, Tensor, Var};

use maxsup_ops::multi_tensor;

use crate::adamw_cpu;
use crate::optimizer::Optimizer;
use crate::param_groups::ParamGroup;
use crate::params::ParamTable;
use crate::state::{adopt_state_tensor, in_place_state, split_state_key, OptimizerState};

/// State slot of the first moment (`<param name>.exp_avg`).
pub const EXP_AVG: &str = "exp_avg";
/// State slot of the second moment (`<param name>.exp_avg_sq`).
pub const EXP_AVG_SQ: &str = "exp_avg_sq";
/// Scalar slot of the per-parameter step count (`<param name>.step`), per-parameter as in PyTorch because a
/// parameter that misses a gradient does not advance its count.
pub const STEP: &str = "step";

/// Hyper-parameters of [`AdamW`] other than the per-group weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Initial learning rate (the schedule usually overrides it through [`Optimizer::set_lr`]).
    pub lr: f64,
    /// Moment decay rates, PyTorch default `(0.9, 0.999)`.
    pub betas: (f64, f64),
    /// Added to `sqrt(v_hat)`, PyTorch default `1e-8`.
    pub eps: f64,
}

impl Default for AdamWConfig {
    /// PyTorch defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }
}

/// A parameter's moments and its step count.
#[derive(Clone, Debug)]
struct Moments {
    values: MomentValues,
    step: u64,
}

/// Where the moments live: host memory for CPU f32 parameters (the fused pass updates them with
/// the parameter), tensors on the parameter's device otherwise (and as imported from a
/// checkpoint, until the first step).
#[derive(Clone, Debug)]
enum MomentValues {
    Tensors {
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
    },
    Host {
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
}

impl MomentValues {
    /// The moments as tensors shaped and placed like `param` (host moments are copied).
    fn tensors(&self, param: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            MomentValues::Tensors {
                exp_avg,
                exp_avg_sq,
            } => Ok((exp_avg.clone(), exp_avg_sq.clone())),
            MomentValues::Host {
                exp_avg,
                exp_avg_sq,
            } => Ok((
                Tensor::from_slice(exp_avg, param.shape(), param.device())?,
                Tensor::from_slice(exp_avg_sq, param.shape(), param.device())?,
            )),
        }
    }

    /// The moments in host memory (tensors are read back).
    fn host(self) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            MomentValues::Host {
                exp_avg,
                exp_avg_sq,
            } => Ok((exp_avg, exp_avg_sq)),
            MomentValues::Tensors {
                exp_avg,
                exp_avg_sq,
            } => Ok((
                exp_avg.flatten_all()?.to_vec1::<f32>()?,
                exp_avg_sq.flatten_all()?.to_vec1::<f32>()?,
            )),
        }
    }
}

/// `torch.optim.AdamW` with per-group `weight_decay`: `p *= 1 - lr*wd`; `m = lerp(m, g, 1-b1)`;
/// `v = b2*v + (1-b2)*g^2`; `p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
#[derive(Debug)]
pub struct AdamW {
    table: ParamTable,
    config: AdamWConfig,
    moments: Vec<Option<Moments>>,
}

impl AdamW {
    /// Builds the optimizer; errors on duplicate names, non-float parameters or out-of-range hyper-parameters.
    pub fn new(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<Self> {
        let (b1, b2) = config.betas;
        if !(config.lr.is_finite() && config.lr >= 0.0) {
            candle_core::bail!(
                "AdamW learning rate must be finite and >= 0, got {}",
                config.lr
            );
        }
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            candle_core::bail!("AdamW betas must lie in [0, 1), got ({b1}, {b2})");
        }
        if !(config.eps.is_finite() && config.eps >= 0.0) {
            candle_core::bail!("AdamW eps must be finite and >= 0, got {}", config.eps);
        }
        let table = ParamTable::new(groups)?;
        let moments = vec![None; table.params.len()];
        Ok(Self {
            table,
            config,
            moments,
        })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> AdamWConfig {
        self.config
    }

    fn step_constants(&self) -> multi_tensor::AdamWStep {
        let AdamWConfig {
            lr,
            betas: (beta1, beta2),
            eps,
        } = self.config;
        multi_tensor::AdamWStep {
            lr,
            beta1,
            beta2,
            eps,
        }
    }

    /// The fused pass on a CPU f32 parameter, its moments in host memory.
    fn update_host(&mut self, i: usize, grad: &Tensor) -> Result<()> {
        let param = &self.table.params[i];
        let n = param.var.elem_count();
        let (step, (mut m, mut v)) = match self.moments[i].take() {
            Some(prev) => (prev.step + 1, prev.values.host()?),
            None => (1, (vec![0f32; n], vec![0f32; n])),
        };
        let constants = adamw_cpu::Step::new(self.step_constants(), param.weight_decay, step);
        // In place on the `Var`'s storage, so the model's clone of it sees the update.
        let result = adamw_cpu::update(
            constants,
            &param.var.as_tensor().detach(),
            &grad.detach(),
            &mut m,
            &mut v,
        );
        self.moments[i] = Some(Moments {
            values: MomentValues::Host {
                exp_avg: m,
                exp_avg_sq: v,
            },
            step,
        });
        result
    }

    fn update_one(&mut self, i: usize, grad: &Tensor) -> Result<()> {
        if adamw_cpu::applies(self.table.params[i].var.as_tensor(), grad) {
            return self.update_host(i, grad);
        }
        let param = &self.table.params[i];
        // Detached, so no autograd graph is recorded (and kept alive by the moments) across steps.
        let p = param.var.as_tensor().detach();
        let (prev, prev_step) = match self.moments[i].take() {
            Some(m) => (Some(m.values.tensors(&p)?), m.step),
            None => (None, 0),
        };
        let step = prev_step + 1;
        let (updated, exp_avg, exp_avg_sq) = composed_update(
            self.config,
            param.weight_decay,
            &p,
            &grad.detach(),
            prev,
            step,
        )?;
        // An empty parameter has nothing to update (and candle refuses to `set` it from a result
        // that shares its empty storage); its step count still advances, as in PyTorch.
        if updated.elem_count() > 0 {
            param.var.set(&updated)?;
        }
        self.moments[i] = Some(Moments {
            values: MomentValues::Tensors {
                exp_avg,
                exp_avg_sq,
            },
            step,
        });
        Ok(())
    }
}

/// The update from candle ops (any device and dtype) at the parameter's step `step` (>= 1):
/// the new parameter and moments (`prev`: the moments before, `None` for zeros).
fn composed_update(
    config: AdamWConfig,
    weight_decay: f64,
    p: &Tensor,
    g: &Tensor,
    prev: Option<(Tensor, Tensor)>,
    step: u64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let AdamWConfig {
        lr,
        betas: (b1, b2),
        eps,
    } = config;
    let p = if weight_decay != 0.0 {
        p.affine(1.0 - lr * weight_decay, 0.0)?
    } else {
        p.clone()
    };
    let (prev_avg, prev_avg_sq) = match prev {
        Some(m) => m,
        None => (g.zeros_like()?, g.zeros_like()?),
    };
    let exp_avg = lerp(&prev_avg, g, 1.0 - b1)?;
    let exp_avg_sq = (prev_avg_sq.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
    let bias_correction1 = 1.0 - b1.powf(step as f64);
    let bias_correction2_sqrt = (1.0 - b2.powf(step as f64)).sqrt();
    let step_size = lr / bias_correction1;
    let denom = exp_avg_sq
        .sqrt()?
        .affine(1.0 / bias_correction2_sqrt, eps)?;
    let updated = (p + (exp_avg.div(&denom)?.affine(-step_size, 0.0))?)?;
    Ok((updated, exp_avg, exp_avg_sq))
}

/// `torch.lerp(start, end, w)` with PyTorch's two-branch formula (more accurate for w near 1).
fn lerp(start: &Tensor, end: &Tensor, w: f64) -> Result<Tensor> {
    let diff = (end - start)?;
    if w < 0.5 {
        start + diff.affine(w, 0.0)?
    } else {
        end - diff.affine(1.0 - w, 0.0)?
    }
}

impl AdamW {
    /// One multi-tensor launch (per 32 parameters) for every CUDA f32 parameter: the same floats
    /// as the composed update, a few kernels per step instead of ~12 per parameter.
    fn update_multi_tensor(&mut self, batch: &[(usize, Tensor)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut moments = Vec::with_capacity(batch.len());
        for &(i, _) in batch {
            let p = self.table.params[i].var.as_tensor();
            let (exp_avg, exp_avg_sq, step) = match self.moments[i].take() {
                Some(m) => {
                    let (a, s) = m.values.tensors(p)?;
                    (in_place_state(a, p)?, in_place_state(s, p)?, m.step + 1)
                }
                None => (p.zeros_like()?, p.zeros_like()?, 1),
            };
            // Handles on the same storage: the update below writes the stored moments.
            moments.push((exp_avg.clone(), exp_avg_sq.clone(), step));
            self.moments[i] = Some(Moments {
                values: MomentValues::Tensors {
                    exp_avg,
                    exp_avg_sq,
                },
                step,
            });
        }
        let tensors: Vec<multi_tensor::AdamWTensors> = batch
            .iter()
            .zip(&moments)
            .map(|((i, grad), (exp_avg, exp_avg_sq, step))| {
                let param = &self.table.params[*i];
                multi_tensor::AdamWTensors {
                    param: param.var.as_tensor(),
                    grad,
                    exp_avg,
                    exp_avg_sq,
                    weight_decay: param.weight_decay,
                    step: *step,
                }
            })
            .collect();
        multi_tensor::adamw_step(self.step_constants(), &tensors)
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (batch, single): (Vec<_>, Vec<_>) = self
            .table
            .gradients(grads)
            .into_iter()
            .partition(|(i, g)| self.table.multi_tensor_eligible(*i, g));
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
        for (param, m) in self.table.params.iter().zip(&self.moments) {
            if let Some(m) = m {
                let (exp_avg, exp_avg_sq) = m.values.tensors(param.var.as_tensor())?;
                state
                    .tensors
                    .insert(format!("{}.{EXP_AVG}", param.name), exp_avg.copy()?);
                state
                    .tensors
                    .insert(format!("{}.{EXP_AVG_SQ}", param.name), exp_avg_sq.copy()?);
                state
                    .scalars
                    .insert(format!("{}.{STEP}", param.name), m.step as f64);
            }
        }
        Ok(state)
    }

    fn import_state(&mut self, state: &OptimizerState) -> Result<()> {
        let n = self.table.params.len();
        let (mut avg, mut avg_sq) = (vec![None; n], vec![None; n]);
        for (key, t) in &state.tensors {
            let (name, slot) = split_state_key(key, &[EXP_AVG_SQ, EXP_AVG])?;
            let i = self.table.position(name)?;
            let t = adopt_state_tensor(key, t, self.table.params[i].var.as_tensor())?;
            if slot == EXP_AVG {
                avg[i] = Some(t)
            } else {
                avg_sq[i] = Some(t)
            }
        }
        let mut moments = vec![None; n];
        for (i, (a, s)) in avg.into_iter().zip(avg_sq).enumerate() {
            let name = &self.table.params[i].name;
            match (a, s) {
                (None, None) => {}
                (Some(exp_avg), Some(exp_avg_sq)) => {
                    let step = state.scalar(&format!("{name}.{STEP}"))?;
                    if !(step >= 1.0 && step.fract() == 0.0 && step < 9.0e15) {
                        candle_core::bail!(
                            "optimizer state `{name}.{STEP}` = {step} is not a positive integer"
                        );
                    }
                    moments[i] = Some(Moments {
                        values: MomentValues::Tensors {
                            exp_avg,
                            exp_avg_sq,
                        },
                        step: step as u64,
                    });
                }
                _ => candle_core::bail!(
                    "optimizer state for `{name}` has only one of `{EXP_AVG}` / `{EXP_AVG_SQ}`"
                ),
            }
        }
        self.config.lr = state.scalar("lr")?;
        self.moments = moments;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused CPU pass against the composed update, value for value over three steps, for
    /// both lerp forms, with and without weight decay, on a parameter longer than one parallel
    /// chunk; the exported moments too.
    #[test]
    fn fused_cpu_update_matches_composed_update() -> Result<()> {
        let dev = Device::Cpu;
        let n = 40_000;
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        for (betas, wd) in [
            ((0.9, 0.999), 0.05),
            ((0.9, 0.999), 0.0),
            ((0.3, 0.99), 0.05),
        ] {
            let config = AdamWConfig {
                lr: 1e-3,
                betas,
                eps: 1e-8,
            };
            let w = Var::new(init.as_slice(), &dev)?;
            let groups = vec![ParamGroup::new(vec![("w".to_string(), w.clone())], wd)];
            let mut adamw = AdamW::new(groups, config)?;
            let (mut p_ref, mut moments) = (Tensor::new(init.as_slice(), &dev)?, None);
            for step in 1..=3u64 {
                let grads = (w.as_tensor().sqr()? * (1.0 + step as f64))?
                    .sum_all()?
                    .backward()?;
                let g = grads.get(w.as_tensor()).expect("w has a gradient").copy()?;
                adamw.step(&grads)?;
                let (p_new, m, v) = composed_update(config, wd, &p_ref, &g, moments, step)?;
                let differ = |a: &Tensor, b: &Tensor| -> Result<usize> {
                    let (a, b) = (a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
                    Ok(a.iter().zip(&b).filter(|(x, y)| x != y).count())
                };
                let what = format!("betas {betas:?} wd {wd} step {step}");
                assert_eq!(differ(w.as_tensor(), &p_new)?, 0, "{what}: parameter");
                let state = adamw.export_state()?;
                assert_eq!(
                    differ(&state.tensors["w.exp_avg"], &m)?,
                    0,
                    "{what}: exp_avg"
                );
                assert_eq!(
                    differ(&state.tensors["w.exp_avg_sq"], &v)?,
                    0,
                    "{what}: exp_avg_sq"
                );
                (p_ref, moments) = (p_new, Some((m, v)));
            }
        }
        Ok(())
    }
}
