//! SGD and AdamW against `torch.optim.SGD` / `torch.optim.AdamW`: six steps with two weight-decay groups,
//! LR changes between steps, and one step where `layer.bias` receives no gradient.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use maxsup_optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use serde_json::Value;

use crate::fixture::{assert_close, f32s, fixture, tensor_f64, vars};

fn groups(case: &Value, vars: &HashMap<String, Var>) -> Vec<ParamGroup> {
    case["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let params = g["params"].as_array().unwrap().iter().map(|n| {
                let n = n.as_str().unwrap();
                (n.to_string(), vars[n].clone())
            });
            ParamGroup::new(params.collect(), g["weight_decay"].as_f64().unwrap())
        })
        .collect()
}

/// Gradients exactly equal to `grads`: d/dp sum(p * g) = g, and only named parameters appear in the store.
pub fn grad_store(vars: &HashMap<String, Var>, grads: &Value) -> candle_core::backprop::GradStore {
    let mut loss: Option<Tensor> = None;
    for (name, g) in grads.as_object().unwrap() {
        let p = vars[name].as_tensor();
        let g = Tensor::from_vec(f32s(g), p.shape(), p.device()).unwrap();
        let term = (p * g).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => (l + term).unwrap(),
        });
    }
    loss.unwrap().backward().unwrap()
}

fn run_case(what: &str, case: &Value, mut opt: impl Optimizer, vars: &HashMap<String, Var>) {
    for (s, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        opt.set_lr(step["lr"].as_f64().unwrap());
        opt.step(&grad_store(vars, &step["grads"])).unwrap();
        for (name, expected) in step["params_after"].as_object().unwrap() {
            let expected = crate::fixture::f64s(expected);
            // Elements that cancel to near zero carry the rounding error of the O(rms) operands (PyTorch fuses
            // `p + alpha*d` into one FMA, candle rounds twice), so small elements are judged against the rms.
            let rms = (expected.iter().map(|e| e * e).sum::<f64>() / expected.len() as f64).sqrt();
            assert_close(
                &format!("{what} step {s} {name}"),
                &tensor_f64(vars[name].as_tensor()),
                &expected,
                1e-6,
                rms,
            );
        }
    }
}

#[test]
fn sgd_matches_torch() {
    for (c, case) in fixture()["sgd"].as_array().unwrap().iter().enumerate() {
        let h = &case["hyper"];
        let vars = vars(&case["init"]);
        let config = SgdConfig {
            lr: h["lr"].as_f64().unwrap(),
            momentum: h["momentum"].as_f64().unwrap(),
            nesterov: h["nesterov"].as_bool().unwrap(),
        };
        let opt = Sgd::new(groups(case, &vars), config).unwrap();
        run_case(&format!("sgd case {c} {config:?}"), case, opt, &vars);
    }
}

#[test]
fn adamw_matches_torch() {
    for (c, case) in fixture()["adamw"].as_array().unwrap().iter().enumerate() {
        let h = &case["hyper"];
        let vars = vars(&case["init"]);
        let betas = crate::fixture::f64s(&h["betas"]);
        let config = AdamWConfig {
            lr: h["lr"].as_f64().unwrap(),
            betas: (betas[0], betas[1]),
            eps: h["eps"].as_f64().unwrap(),
        };
        let opt = AdamW::new(groups(case, &vars), config).unwrap();
        run_case(&format!("adamw case {c} {config:?}"), case, opt, &vars);
    }
}
