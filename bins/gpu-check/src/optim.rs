//! The multi-tensor optimizer updates on CUDA against the same optimizers on the CPU: three SGD
//! (Nesterov), AdamW and EMA steps over 40 tensors of ResNet-like sizes (two launches), one of
//! them with a transposed (non-contiguous) gradient. The kernels avoid FMA contraction, so the
//! GPU should compute the CPU's floats: the limit is 1e-6 relative and the report says whether
//! they are equal.

use crate::compare::{rel_error, values};
use anyhow::Result;
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use maxsup_optim::{AdamW, AdamWConfig, ModelEma, Optimizer, ParamGroup, Sgd, SgdConfig};
use serde_json::{json, Value};

const TOL: f64 = 1e-6;

/// Shapes: conv weights, BatchNorm vectors, a classifier, many small tensors.
fn shapes() -> Vec<Vec<usize>> {
    let mut v = vec![
        vec![64, 3, 7, 7],
        vec![64],
        vec![256, 64, 1, 1],
        vec![512, 512, 3, 3],
        vec![1000, 2048],
        vec![1000],
    ];
    v.extend((0..34).map(|i| vec![16 + 8 * i]));
    v
}

fn vars(dev: &Device) -> Result<Vec<Var>> {
    shapes()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            let t = Tensor::from_vec(values(n, 300 + i as u64), s.as_slice(), &Device::Cpu)?;
            Ok(Var::from_tensor(&t.to_device(dev)?)?)
        })
        .collect()
}

fn groups(vars: &[Var]) -> Vec<ParamGroup> {
    let named = |keep: fn(usize) -> bool| {
        vars.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(i, v)| (format!("t{i}"), v.clone()))
            .collect()
    };
    vec![
        ParamGroup::new(named(|i| i % 2 == 0), 5e-2),
        ParamGroup::new(named(|i| i % 2 == 1), 0.0),
    ]
}

/// Gradients of `sum(var_i * c_i)`: exactly `c_i`; the classifier's through a transpose, so its
/// gradient arrives non-contiguous.
fn grads(vars: &[Var], step: u64) -> Result<GradStore> {
    let dev = vars[0].device().clone();
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &dev)?;
    for (i, v) in vars.iter().enumerate() {
        let t = v.as_tensor();
        let seed = 1000 * (step + 1) + i as u64;
        let term = if t.rank() == 2 {
            let tt = t.t()?;
            let c = Tensor::from_vec(values(t.elem_count(), seed), tt.shape(), &Device::Cpu)?;
            (tt * c.to_device(&dev)?)?.sum_all()?
        } else {
            let c = Tensor::from_vec(values(t.elem_count(), seed), t.shape(), &Device::Cpu)?;
            (t * c.to_device(&dev)?)?.sum_all()?
        };
        loss = (loss + term)?;
    }
    Ok(loss.backward()?)
}

fn compare(rows: &mut Vec<Value>, name: &str, got: &[Tensor], want: &[Tensor]) -> Result<()> {
    let (mut worst, mut finite, mut equal) = (0f64, true, true);
    for (a, b) in got.iter().zip(want) {
        let (e, f) = rel_error(a, b)?;
        worst = worst.max(e);
        finite &= f;
        let (av, bv) = (
            a.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        equal &= av == bv;
    }
    rows.push(json!({
        "name": name, "dtype": "f32", "what": "3 steps", "rel_error": worst, "tol": TOL,
        "bit_equal": equal, "pass": finite && worst < TOL,
    }));
    Ok(())
}

fn run_optimizer(
    rows: &mut Vec<Value>,
    name: &str,
    gpu: &Device,
    make: &dyn Fn(Vec<ParamGroup>) -> candle_core::Result<Box<dyn Optimizer>>,
) -> Result<()> {
    let mut sides = Vec::new();
    for dev in [gpu, &Device::Cpu] {
        let vs = vars(dev)?;
        let mut opt = make(groups(&vs))?;
        for step in 0..3 {
            opt.step(&grads(&vs, step)?)?;
        }
        sides.push(vs.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>());
    }
    compare(rows, name, &sides[0], &sides[1])
}

pub fn rows(gpu: &Device) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    run_optimizer(&mut rows, "sgd nesterov multi-tensor", gpu, &|g| {
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
        };
        Ok(Box::new(Sgd::new(g, config)?))
    })?;
    run_optimizer(&mut rows, "adamw multi-tensor", gpu, &|g| {
        let config = AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        };
        Ok(Box::new(AdamW::new(g, config)?))
    })?;
    let mut sides = Vec::new();
    for dev in [gpu, &Device::Cpu] {
        let vs = vars(dev)?;
        let names: Vec<String> = (0..vs.len()).map(|i| format!("t{i}")).collect();
        let named =
            |vs: &[Var]| -> Vec<Tensor> { vs.iter().map(|v| v.as_tensor().clone()).collect() };
        let mut ema = ModelEma::new(names.iter().map(|n| n.as_str()).zip(&named(&vs)), 0.9998)?;
        for step in 0..3 {
            let model: Vec<Tensor> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let n = v.elem_count();
                    let t = Tensor::from_vec(
                        values(n, 7000 + 100 * step + i as u64),
                        v.shape(),
                        &Device::Cpu,
                    )?;
                    Ok(t.to_device(dev)?)
                })
                .collect::<Result<_>>()?;
            ema.update(names.iter().map(|n| n.as_str()).zip(&model))?;
        }
        let averages = names
            .iter()
            .map(|n| {
                ema.get(n)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("the EMA lost `{n}`"))
            })
            .collect::<Result<Vec<_>>>()?;
        sides.push(averages);
    }
    compare(&mut rows, "ema multi-tensor", &sides[0], &sides[1])?;
    Ok(rows)
}
