//! LR schedules against torch.optim.lr_scheduler (StepLR, MultiStepLR, CosineAnnealingLR), timm's
//! CosineLRScheduler (per epoch, with warmup_prefix, and per update) and FFCV's per-iteration interpolation.

use maxsup_optim::{
    CosineAnnealingLr, FfcvLr, FfcvShape, Granularity, LrSchedule, MultiStepLr, StepLr,
    TimmCosineLr,
};
use serde_json::Value;

use crate::fixture::{assert_close, f64s, fixture, usizes};

fn case(name: &str) -> &'static Value {
    &fixture()["schedules"][name]
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("fixture field `{key}`"))
}

/// Compares one value per epoch (iteration 0).
fn check_per_epoch(what: &str, s: &impl LrSchedule, expected: &Value) {
    let expected = f64s(expected);
    let actual: Vec<f64> = (0..expected.len()).map(|e| s.lr(e, 0, 1)).collect();
    assert_close(what, &actual, &expected, 1e-9, 0.0);
}

/// Compares one value per iteration, walking epochs of `ipe` iterations.
fn check_per_iter(what: &str, s: &impl LrSchedule, expected: &Value, ipe: usize) {
    let expected = f64s(expected);
    let actual: Vec<f64> = (0..expected.len())
        .map(|k| s.lr(k / ipe, k % ipe, ipe))
        .collect();
    assert_close(what, &actual, &expected, 1e-9, 1e-12);
}

#[test]
fn step_lr_matches_torch() {
    let c = case("step_lr");
    let s = StepLr {
        base_lr: num(c, "base_lr"),
        step_size: c["step_size"].as_u64().unwrap() as usize,
        gamma: num(c, "gamma"),
    };
    check_per_epoch("StepLR", &s, &c["per_epoch"]);
}

#[test]
fn multi_step_lr_matches_torch() {
    let c = case("multi_step_lr");
    let s = MultiStepLr {
        base_lr: num(c, "base_lr"),
        milestones: usizes(&c["milestones"]),
        gamma: num(c, "gamma"),
    };
    check_per_epoch("MultiStepLR", &s, &c["per_epoch"]);
}

#[test]
fn cosine_annealing_matches_torch_per_epoch_and_per_iteration() {
    let c = case("cosine_annealing_epoch");
    let s = CosineAnnealingLr {
        base_lr: num(c, "base_lr"),
        t_max: num(c, "t_max"),
        eta_min: num(c, "eta_min"),
        granularity: Granularity::PerEpoch,
    };
    check_per_epoch("CosineAnnealingLR per epoch", &s, &c["per_epoch"]);

    let c = case("cosine_annealing_iter");
    let s = CosineAnnealingLr {
        base_lr: num(c, "base_lr"),
        t_max: num(c, "t_max_epochs"),
        eta_min: num(c, "eta_min"),
        granularity: Granularity::PerIteration,
    };
    check_per_iter(
        "CosineAnnealingLR per iteration",
        &s,
        &c["per_iter"],
        num(c, "iters_per_epoch") as usize,
    );
}

#[test]
fn timm_cosine_matches_timm() {
    for name in ["timm_cosine_epoch", "timm_cosine_epoch_prefix"] {
        let c = case(name);
        let s = TimmCosineLr {
            base_lr: num(c, "base_lr"),
            t_initial: num(c, "t_initial"),
            lr_min: num(c, "lr_min"),
            warmup_t: num(c, "warmup_t"),
            warmup_lr_init: num(c, "warmup_lr_init"),
            warmup_prefix: c["warmup_prefix"].as_bool().unwrap(),
            granularity: Granularity::PerEpoch,
        };
        check_per_epoch(name, &s, &c["per_epoch"]);
    }
    let c = case("timm_cosine_update");
    let s = TimmCosineLr {
        base_lr: num(c, "base_lr"),
        t_initial: num(c, "t_initial_epochs"),
        lr_min: num(c, "lr_min"),
        warmup_t: num(c, "warmup_t_epochs"),
        warmup_lr_init: num(c, "warmup_lr_init"),
        warmup_prefix: false,
        granularity: Granularity::PerIteration,
    };
    check_per_iter(
        "timm cosine per update",
        &s,
        &c["per_iter"],
        num(c, "iters_per_epoch") as usize,
    );
}

#[test]
fn deit_loop_lr_lags_one_epoch() {
    let c = case("timm_cosine_epoch");
    let s = TimmCosineLr {
        base_lr: num(c, "base_lr"),
        t_initial: num(c, "t_initial"),
        lr_min: num(c, "lr_min"),
        warmup_t: num(c, "warmup_t"),
        warmup_lr_init: num(c, "warmup_lr_init"),
        warmup_prefix: false,
        granularity: Granularity::PerEpoch,
    };
    let timm = f64s(&c["per_epoch"]);
    assert_eq!(s.deit_loop_lr(0), timm[0]);
    assert_eq!(s.deit_loop_lr(1), timm[0]);
    assert_eq!(s.deit_loop_lr(6), timm[5]);
}

#[test]
fn ffcv_schedules_match_ffcv() {
    let c = case("ffcv_cyclic");
    let s = FfcvLr {
        base_lr: num(c, "base_lr"),
        epochs: num(c, "epochs") as usize,
        shape: FfcvShape::Cyclic {
            lr_peak_epoch: num(c, "lr_peak_epoch"),
        },
    };
    check_per_iter(
        "FFCV cyclic",
        &s,
        &c["per_iter"],
        num(c, "iters_per_epoch") as usize,
    );

    let c = case("ffcv_step");
    let s = FfcvLr {
        base_lr: num(c, "base_lr"),
        epochs: num(c, "epochs") as usize,
        shape: FfcvShape::Step {
            step_ratio: num(c, "step_ratio"),
            step_length: num(c, "step_length") as usize,
        },
    };
    check_per_iter(
        "FFCV step",
        &s,
        &c["per_iter"],
        num(c, "iters_per_epoch") as usize,
    );
}
