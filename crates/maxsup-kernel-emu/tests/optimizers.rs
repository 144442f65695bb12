//! The multi-tensor optimizer kernels (SGD with momentum, AdamW, the weight EMA) against
//! maxsup-optim's CPU optimizers, to the bit: 40 tensors (two launches of at most 32) of sizes
//! around the per-block chunk, per-tensor weight decay, three steps, and for AdamW parameters
//! that miss a step (their bias corrections lag).

mod common;

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use common::random;
use maxsup_ops::multi_tensor::table::{adamw_scalars, sgd_scalars, Entry, Update, CHUNK};
use maxsup_ops::multi_tensor::{AdamWStep, SgdMomentum};
use maxsup_optim::{AdamW, AdamWConfig, ModelEma, Optimizer, ParamGroup, Sgd, SgdConfig};

/// Tensor sizes: below, at and above one block's chunk, a few thousand, and many tiny ones.
fn lens() -> Vec<usize> {
    let mut v = vec![1, 7, 300, CHUNK - 1, CHUNK, CHUNK + 1, 40_000, 0];
    v.extend((0..32).map(|i| 3 + 37 * i));
    v
}

fn weight_decay(i: usize) -> f64 {
    [0.0, 1e-4, 5e-2][i % 3]
}

/// The host side of the emulated update: every tensor's parameter, gradient and state.
struct Host {
    param: Vec<Vec<f32>>,
    grad: Vec<Vec<f32>>,
    state0: Vec<Vec<f32>>,
    state1: Vec<Vec<f32>>,
}

impl Host {
    fn new(init: &[Vec<f32>]) -> Self {
        let zeros = || init.iter().map(|p| vec![0f32; p.len()]).collect::<Vec<_>>();
        Host {
            param: init.to_vec(),
            grad: zeros(),
            state0: zeros(),
            state1: zeros(),
        }
    }

    /// Entries for tensors `which` with per-tensor `scalars`.
    fn entries(&mut self, which: &[usize], scalars: impl Fn(usize) -> [f32; 3]) -> Vec<Entry> {
        which
            .iter()
            .map(|&i| Entry {
                param: self.param[i].as_mut_ptr() as u64,
                grad: self.grad[i].as_ptr() as u64,
                state0: self.state0[i].as_mut_ptr() as u64,
                state1: self.state1[i].as_mut_ptr() as u64,
                scalars: scalars(i),
                len: self.param[i].len(),
            })
            .collect()
    }
}

fn run(update: Update, entries: &[Entry]) {
    // SAFETY: the entries point into `Host`'s vectors, alive and distinct for the call.
    unsafe { maxsup_kernel_emu::multi_tensor(update, entries) }.expect("emulated launch");
}

/// Vars `t{i}` on the CPU, one parameter group per weight decay.
fn vars(init: &[Vec<f32>]) -> (Vec<Var>, Vec<ParamGroup>) {
    let vars: Vec<Var> = init
        .iter()
        .map(|v| Var::from_slice(v, v.len(), &Device::Cpu).expect("var"))
        .collect();
    let groups = (0..3)
        .map(|g| {
            let named = (0..vars.len())
                .filter(|i| i % 3 == g)
                .map(|i| (format!("t{i}"), vars[i].clone()))
                .collect();
            ParamGroup::new(named, weight_decay(g))
        })
        .collect();
    (vars, groups)
}

/// Gradients of `sum(var_i * g_i)` over `which`: exactly `g_i`.
fn grads(vars: &[Var], g: &[Vec<f32>], which: &[usize]) -> GradStore {
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).expect("zero");
    for &i in which {
        let c = Tensor::from_slice(&g[i], g[i].len(), &Device::Cpu).expect("g");
        loss = (loss
            + (vars[i].as_tensor() * c)
                .and_then(|t| t.sum_all())
                .expect("term"))
        .expect("sum");
    }
    loss.backward().expect("backward")
}

fn assert_same(what: &str, i: usize, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what} of tensor {i}: length");
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{what} of tensor {i}: {differ} values differ");
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
}

fn initial(seed: u64) -> Vec<Vec<f32>> {
    lens()
        .iter()
        .enumerate()
        .map(|(i, &n)| random::<f32>(n, seed + i as u64, 0.5, 0.0))
        .collect()
}

fn step_grads(step: u64) -> Vec<Vec<f32>> {
    lens()
        .iter()
        .enumerate()
        .map(|(i, &n)| random::<f32>(n, 1000 * (step + 1) + i as u64, 1.0, 0.1))
        .collect()
}

#[test]
fn sgd_momentum_kernel_computes_the_cpu_optimizers_floats() {
    for nesterov in [true, false] {
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
        };
        let init = initial(1);
        let (vars, groups) = vars(&init);
        let mut sgd = Sgd::new(groups, config).expect("sgd");
        let mut host = Host::new(&init);
        let all: Vec<usize> = (0..init.len()).collect();
        for step in 0..3 {
            host.grad = step_grads(step);
            sgd.step(&grads(&vars, &host.grad, &all)).expect("cpu step");
            let entries = host.entries(&all, |i| sgd_scalars(weight_decay(i)));
            let update = Update::sgd(SgdMomentum {
                lr: config.lr,
                momentum: config.momentum,
                nesterov,
            });
            run(update, &entries);
            let state = sgd.export_state().expect("state");
            for (i, var) in vars.iter().enumerate() {
                assert_same("parameter", i, &host.param[i], &values(var.as_tensor()));
                let buf = &state.tensors[&format!("t{i}.momentum_buffer")];
                assert_same("momentum buffer", i, &host.state0[i], &values(buf));
            }
        }
    }
}

#[test]
fn adamw_kernel_computes_the_cpu_optimizers_floats() {
    // beta1 = 0.3 takes PyTorch's other lerp form (weight 0.7 >= 0.5).
    for betas in [(0.9, 0.999), (0.3, 0.99)] {
        let config = AdamWConfig {
            lr: 1e-3,
            betas,
            eps: 1e-8,
        };
        let init = initial(2);
        let (vars, groups) = vars(&init);
        let mut adamw = AdamW::new(groups, config).expect("adamw");
        let mut host = Host::new(&init);
        let mut counts = vec![0u64; init.len()];
        let step_config = AdamWStep {
            lr: config.lr,
            beta1: betas.0,
            beta2: betas.1,
            eps: config.eps,
        };
        for step in 0..3 {
            // The first step leaves out the odd tensors: their step counts lag by one.
            let which: Vec<usize> = (0..init.len()).filter(|i| step > 0 || i % 2 == 0).collect();
            host.grad = step_grads(step);
            adamw
                .step(&grads(&vars, &host.grad, &which))
                .expect("cpu step");
            for &i in &which {
                counts[i] += 1;
            }
            let entries = host.entries(&which, |i| {
                adamw_scalars(step_config, weight_decay(i), counts[i])
            });
            run(Update::adamw(step_config), &entries);
            let state = adamw.export_state().expect("state");
            for i in 0..init.len() {
                assert_same("parameter", i, &host.param[i], &values(vars[i].as_tensor()));
                if counts[i] == 0 {
                    continue;
                }
                let m = &state.tensors[&format!("t{i}.exp_avg")];
                let v = &state.tensors[&format!("t{i}.exp_avg_sq")];
                assert_same("exp_avg", i, &host.state0[i], &values(m));
                assert_same("exp_avg_sq", i, &host.state1[i], &values(v));
            }
        }
    }
}

#[test]
fn ema_kernel_computes_the_cpu_averages_floats() {
    let decay = 0.9998;
    let init = initial(3);
    let names: Vec<String> = (0..init.len()).map(|i| format!("t{i}")).collect();
    let tensors = |v: &[Vec<f32>]| -> Vec<Tensor> {
        v.iter()
            .map(|x| Tensor::from_slice(x, x.len(), &Device::Cpu).expect("tensor"))
            .collect()
    };
    let model = tensors(&init);
    let mut ema = ModelEma::new(names.iter().map(|n| n.as_str()).zip(&model), decay).expect("ema");
    // The emulated average starts as the model, in `state0`; the model is read from `param`.
    let mut host = Host::new(&init);
    host.state0 = init.clone();
    let all: Vec<usize> = (0..init.len()).collect();
    for step in 0..3 {
        host.param = step_grads(step);
        let model = tensors(&host.param);
        ema.update(names.iter().map(|n| n.as_str()).zip(&model))
            .expect("cpu update");
        let entries = host.entries(&all, |_| [0.0; 3]);
        run(Update::ema(decay), &entries);
        for (i, name) in names.iter().enumerate() {
            let want = values(ema.get(name).expect("average"));
            assert_same("average", i, &host.state0[i], &want);
        }
    }
}
