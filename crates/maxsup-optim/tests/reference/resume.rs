//! Checkpoint/resume equivalence: stopping after k steps, writing parameters + optimizer state through a real
//! safetensors file, and continuing in a fresh optimizer must give bit-identical parameters to an
//! uninterrupted run (CPU).

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use maxsup_optim::{
    split_weight_decay, AdamW, AdamWConfig, Optimizer, OptimizerState, ParamGroup, Sgd, SgdConfig,
};

const STEPS: usize = 7;
const STOP_AFTER: usize = 3;

fn initial_params() -> Vec<(String, Tensor)> {
    let dev = Device::Cpu;
    let wave = |n: usize, phase: f32| {
        (0..n)
            .map(|i| ((i as f32 + phase) * 0.37).sin())
            .collect::<Vec<f32>>()
    };
    vec![
        (
            "blocks.0.fc.weight".to_string(),
            Tensor::from_vec(wave(12, 0.5), (3, 4), &dev).unwrap(),
        ),
        (
            "blocks.0.fc.bias".to_string(),
            Tensor::from_vec(wave(3, 1.5), 3, &dev).unwrap(),
        ),
        (
            "pos_embed".to_string(),
            Tensor::from_vec(wave(8, 2.5), (1, 4, 2), &dev).unwrap(),
        ),
    ]
}

/// Deterministic, step-dependent loss; `pos_embed` gets no gradient on step 1 (tests per-parameter counts).
fn grads(step: usize, vars: &HashMap<String, Var>) -> GradStore {
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        if step == 1 && name == "pos_embed" {
            continue;
        }
        let p = vars[name].as_tensor();
        let target = (p.ones_like().unwrap() * ((step * 3 + k) as f64 * 0.21).cos()).unwrap();
        let term = (p - target).unwrap().sqr().unwrap().sum_all().unwrap();
        loss = (loss + term).unwrap();
    }
    loss.backward().unwrap()
}

fn fresh_vars(params: &[(String, Tensor)]) -> HashMap<String, Var> {
    params
        .iter()
        .map(|(k, t)| (k.clone(), Var::from_tensor(&t.copy().unwrap()).unwrap()))
        .collect()
}

fn groups(vars: &HashMap<String, Var>) -> Vec<ParamGroup> {
    split_weight_decay(
        vars.iter().map(|(k, v)| (k.clone(), v.clone())),
        0.05,
        &["pos_embed", "cls_token"],
    )
    .unwrap()
    .into()
}

fn lr_at(step: usize) -> f64 {
    0.05 / (1.0 + step as f64)
}

fn run_steps(opt: &mut dyn Optimizer, vars: &HashMap<String, Var>, steps: std::ops::Range<usize>) {
    for s in steps {
        opt.set_lr(lr_at(s));
        opt.step(&grads(s, vars)).unwrap();
    }
}

fn bits(vars: &HashMap<String, Var>) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = vars
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

fn check_resume(make: &dyn Fn(Vec<ParamGroup>) -> Box<dyn Optimizer>, what: &str) {
    let init = initial_params();
    let straight = fresh_vars(&init);
    run_steps(make(groups(&straight)).as_mut(), &straight, 0..STEPS);

    let first = fresh_vars(&init);
    let mut opt = make(groups(&first));
    run_steps(opt.as_mut(), &first, 0..STOP_AFTER);
    let dir =
        std::env::temp_dir().join(format!("maxsup-optim-resume-{}-{what}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model_path, optim_path) = (dir.join("model.safetensors"), dir.join("optim.safetensors"));
    let model: HashMap<String, Tensor> = first
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&model, &model_path).unwrap();
    candle_core::safetensors::save(
        &opt.export_state().unwrap().to_tensor_map().unwrap(),
        &optim_path,
    )
    .unwrap();
    drop(opt);

    let loaded = candle_core::safetensors::load(&model_path, &Device::Cpu).unwrap();
    let resumed: HashMap<String, Var> = loaded
        .iter()
        .map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap()))
        .collect();
    // Sensitivity check: continuing from the same weights WITHOUT the optimizer state must differ.
    let cold: HashMap<String, Var> = loaded
        .iter()
        .map(|(k, t)| (k.clone(), Var::from_tensor(&t.copy().unwrap()).unwrap()))
        .collect();
    run_steps(make(groups(&cold)).as_mut(), &cold, STOP_AFTER..STEPS);
    assert_ne!(
        bits(&cold),
        bits(&straight),
        "{what}: optimizer state had no effect, the test proves nothing"
    );

    let mut opt = make(groups(&resumed));
    let state = OptimizerState::from_tensor_map(
        candle_core::safetensors::load(&optim_path, &Device::Cpu).unwrap(),
    )
    .unwrap();
    opt.import_state(&state).unwrap();
    assert_eq!(opt.lr(), lr_at(STOP_AFTER - 1), "{what}: LR restored");
    run_steps(opt.as_mut(), &resumed, STOP_AFTER..STEPS);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(
        bits(&resumed),
        bits(&straight),
        "{what}: resumed run differs from the uninterrupted one"
    );
}

#[test]
fn sgd_resume_is_bit_identical() {
    let make = |g: Vec<ParamGroup>| -> Box<dyn Optimizer> {
        Box::new(
            Sgd::new(
                g,
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                },
            )
            .unwrap(),
        )
    };
    check_resume(&make, "sgd");
}

#[test]
fn adamw_resume_is_bit_identical() {
    let make = |g: Vec<ParamGroup>| -> Box<dyn Optimizer> {
        Box::new(AdamW::new(g, AdamWConfig::default()).unwrap())
    };
    check_resume(&make, "adamw");
}

#[test]
fn import_rejects_state_of_another_model() {
    let vars = fresh_vars(&initial_params());
    let mut opt = Sgd::new(
        groups(&vars),
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
        },
    )
    .unwrap();
    let mut state = OptimizerState::default();
    state.scalars.insert("lr".into(), 0.1);
    state.tensors.insert(
        "head.weight.momentum_buffer".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = opt.import_state(&state).unwrap_err().to_string();
    assert!(err.contains("unknown parameter `head.weight`"), "{err}");
    state.tensors.clear();
    state.tensors.insert(
        "pos_embed.momentum_buffer".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = opt.import_state(&state).unwrap_err().to_string();
    assert!(
        err.contains("`pos_embed.momentum_buffer` has shape [2]"),
        "{err}"
    );
}
