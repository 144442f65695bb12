//! The linear probe against scikit-learn (fixtures/gen_probe_fixture.py) and finite differences.

mod fixture_util;
use fixture_util::*;
use maxsup_metrics::probe::{
    fit, stratified_split, LbfgsParams, ProbeConfig, ProbeData, SoftmaxObjective, Standardizer,
};
use maxsup_metrics::{run_probe, SplitMix64};

fn tight() -> LbfgsParams {
    LbfgsParams {
        gtol: 1e-8,
        ftol: 0.0,
        max_iter: 10_000,
        ..Default::default()
    }
}

fn data(fx: &serde_json::Value, x: &str, y: &str) -> ProbeData {
    ProbeData {
        features: f32s(&fx[x]),
        labels: u32s(&fx[y]),
        dim: fx["d"].as_u64().unwrap() as usize,
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let (n, d, k) = (300, 5, 4);
    let mut r = SplitMix64::new(3);
    let x: Vec<f32> = (0..n * d).map(|_| r.next_normal() as f32).collect();
    let y: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let obj = SoftmaxObjective {
        x: &x,
        y: &y,
        d,
        k,
        lambda: 0.3,
    };
    let theta: Vec<f64> = (0..obj.num_params())
        .map(|_| r.next_normal() * 0.5)
        .collect();
    let mut g = vec![0.0; theta.len()];
    let f = obj.value_grad(&theta, &mut g);
    assert!(f.is_finite() && f > 0.0);
    let mut scratch = vec![0.0; theta.len()];
    for i in 0..theta.len() {
        let h = 1e-3;
        let (mut tp, mut tm) = (theta.clone(), theta.clone());
        tp[i] += h;
        tm[i] -= h;
        let fd =
            (obj.value_grad(&tp, &mut scratch) - obj.value_grad(&tm, &mut scratch)) / (2.0 * h);
        // f32 logits limit the agreement to ~1e-5.
        assert!(
            (fd - g[i]).abs() < 1e-4 * (1.0 + g[i].abs()),
            "param {i}: analytic {} vs numeric {fd}",
            g[i]
        );
    }
}

#[test]
fn single_fit_matches_sklearn_coefficients() {
    let fx = load("probe.json");
    let mut train = data(&fx, "train_x", "train_y");
    Standardizer::fit(&train.features, train.dim).apply(&mut train.features);
    // Logits are f32, so the objective is only known to ~1e-7 and the line search stops at that
    // noise floor (LineSearchFailed) ~2e-4 away from the f64 optimum. scikit-learn given the same f32
    // features is 2.4e-4 away (checked when writing the fixture), so this is parity, not slack.
    let (model, st) = fit(
        &train,
        3,
        fx["single_lambda"].as_f64().unwrap(),
        None,
        tight(),
    );
    assert!(st.iterations > 5, "{st:?}");
    let d = train.dim;
    for (c, row) in fx["coef"].as_array().unwrap().iter().enumerate() {
        for (j, w) in f64s(row).into_iter().enumerate() {
            close(model.theta[c * d + j], w, 3e-4, "coefficient");
        }
    }
    for (c, b) in f64s(&fx["intercept"]).into_iter().enumerate() {
        close(model.theta[3 * d + c], b, 3e-4, "intercept");
    }
}

#[test]
fn split_matches_the_python_port() {
    let fx = load("probe.json");
    let (_, val) = stratified_split(&u32s(&fx["train_y"]), 0.2, 0);
    let expected: Vec<usize> = fx["probe"]["val_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(val, expected);
}

#[test]
fn probe_protocol_matches_sklearn() {
    let fx = load("probe.json");
    let cfg = ProbeConfig {
        lambdas: f64s(&fx["grid"]),
        solver: tight(),
        ..Default::default()
    };
    let r = run_probe(
        data(&fx, "train_x", "train_y"),
        data(&fx, "test_x", "test_y"),
        &cfg,
    )
    .unwrap();
    let reference = &fx["probe"];
    for (mine, theirs) in r.path.iter().zip(reference["path"].as_array().unwrap()) {
        close(
            mine.lambda,
            theirs["lambda"].as_f64().unwrap(),
            1e-12,
            "λ order",
        );
        close(
            mine.val_accuracy,
            theirs["val_accuracy"].as_f64().unwrap(),
            1e-12,
            "validation accuracy",
        );
    }
    close(
        r.chosen_lambda,
        reference["chosen_lambda"].as_f64().unwrap(),
        1e-12,
        "chosen λ",
    );
    close(
        r.test_accuracy,
        reference["test_accuracy"].as_f64().unwrap(),
        1e-12,
        "test accuracy",
    );
    assert_eq!(
        (r.train_samples, r.val_samples, r.test_samples),
        (192, 48, 120)
    );
}

#[test]
fn probe_rejects_inconsistent_data() {
    let cfg = ProbeConfig::default();
    let ok = ProbeData {
        features: vec![0.0, 1.0, 1.0, 0.0],
        labels: vec![0, 1],
        dim: 2,
    };
    let missing = ProbeData {
        features: vec![0.0, 1.0, 1.0, 0.0],
        labels: vec![0, 2],
        dim: 2,
    };
    assert!(run_probe(missing, ok.clone(), &cfg)
        .unwrap_err()
        .to_string()
        .contains("class 1"));
    let unseen = ProbeData {
        features: vec![0.0, 1.0],
        labels: vec![5],
        dim: 2,
    };
    assert!(run_probe(ok.clone(), unseen, &cfg).is_err());
    let wrong_dim = ProbeData {
        features: vec![0.0; 3],
        labels: vec![0],
        dim: 3,
    };
    assert!(run_probe(ok, wrong_dim, &cfg).is_err());
}
