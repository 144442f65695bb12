//! Linear transfer probe: L2-regularised multinomial logistic regression on
//! frozen features, trained with our L-BFGS, regularisation picked on a stratified validation
//! split from 45 log-spaced λ in [1e-6, 1e5], then refit on train+val and scored on test.
//!
//! Conventions (the benchmark `bench/probe_vs_sklearn.py` applies the same on the sklearn side):
//! * objective `(1/N) Σ CE + (λ/2)||W||²`, intercept unpenalised ⇔ sklearn `C = 1/(λ·N)` with N
//!   the number of samples in that fit;
//! * features standardised with the mean/std of the whole training file (see [`Standardizer`]);
//! * λ path walked from strongest to weakest, each fit warm-started from the previous solution;
//!   ties in validation accuracy go to the stronger λ; the refit starts from the chosen λ's fit.
//!   The L-BFGS curvature pairs are carried along the path too (their y shifted by Δλ·s, exact for
//!   an L2 change), which sklearn cannot do; it saves most line-search trials at strong λ.

mod kernel;
pub mod lbfgs;
pub mod line_search;
pub mod objective;
pub mod split;
pub mod standardize;

pub use lbfgs::{LbfgsMemory, LbfgsParams, StopReason};
pub use objective::SoftmaxObjective;
pub use split::stratified_split;
pub use standardize::Standardizer;

use anyhow::{ensure, Result};
use serde::Serialize;
use std::time::Instant;

/// Labelled features held in memory, row-major [rows, dim].
#[derive(Clone, Debug)]
pub struct ProbeData {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub dim: usize,
}

impl ProbeData {
    fn rows(&self) -> usize {
        self.labels.len()
    }

    fn subset(&self, idx: &[usize]) -> ProbeData {
        let d = self.dim;
        let mut features = Vec::with_capacity(idx.len() * d);
        idx.iter()
            .for_each(|&i| features.extend_from_slice(&self.features[i * d..(i + 1) * d]));
        ProbeData {
            features,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            dim: d,
        }
    }
}

/// Probe settings.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Candidate λ values; walked from the largest to the smallest.
    pub lambdas: Vec<f64>,
    pub val_fraction: f64,
    pub seed: u64,
    pub standardize: bool,
    pub solver: LbfgsParams,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            lambdas: log_grid(1e-6, 1e5, 45),
            val_fraction: 0.2,
            seed: 0,
            standardize: true,
            solver: LbfgsParams::default(),
        }
    }
}

/// `count` values log-spaced from `lo` to `hi` inclusive (numpy `logspace`).
pub fn log_grid(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let (a, b) = (lo.log10(), hi.log10());
    (0..count)
        .map(|i| {
            10f64.powf(if count == 1 {
                a
            } else {
                a + (b - a) * i as f64 / (count - 1) as f64
            })
        })
        .collect()
}

/// One point of the regularisation path.
#[derive(Clone, Debug, Serialize)]
pub struct PathPoint {
    pub lambda: f64,
    /// scikit-learn's equivalent `C = 1 / (λ · N_fit)`.
    pub sklearn_c: f64,
    pub val_accuracy: f64,
    pub iterations: usize,
    /// Objective/gradient evaluations (line-search trials included).
    pub evaluations: usize,
    pub stop: StopReason,
}

/// Outcome of [`run_probe`].
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub num_classes: usize,
    pub dim: usize,
    pub train_samples: usize,
    pub val_samples: usize,
    pub test_samples: usize,
    /// Path in the order fitted (strongest regularisation first).
    pub path: Vec<PathPoint>,
    pub chosen_lambda: f64,
    pub chosen_val_accuracy: f64,
    /// sklearn `C` of the final refit on train+val.
    pub refit_sklearn_c: f64,
    pub refit_iterations: usize,
    pub test_accuracy: f64,
    pub seconds: f64,
}

/// A fitted classifier: θ = [W (K×D), b (K)].
#[derive(Clone, Debug)]
pub struct LinearModel {
    pub theta: Vec<f64>,
    pub dim: usize,
    pub num_classes: usize,
}

impl LinearModel {
    /// Fraction of rows of `data` classified correctly.
    pub fn accuracy(&self, data: &ProbeData) -> f64 {
        let pred =
            SoftmaxObjective::predict(&self.theta, &data.features, self.dim, self.num_classes);
        pred.iter()
            .zip(&data.labels)
            .filter(|(p, y)| p == y)
            .count() as f64
            / data.rows().max(1) as f64
    }
}

/// Solver statistics of one fit.
#[derive(Clone, Copy, Debug)]
pub struct FitStats {
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: StopReason,
}

/// Fits one λ from `start` (zeros when `None`).
pub fn fit(
    data: &ProbeData,
    num_classes: usize,
    lambda: f64,
    start: Option<&[f64]>,
    solver: LbfgsParams,
) -> (LinearModel, FitStats) {
    fit_with_memory(
        data,
        num_classes,
        lambda,
        start,
        solver,
        &mut LbfgsMemory::default(),
    )
}

/// [`fit`] continuing from L-BFGS curvature pairs of a previous fit (already adjusted to `lambda`
/// with [`LbfgsMemory::shift_curvature`]); `memory` is updated for the next fit.
pub fn fit_with_memory(
    data: &ProbeData,
    num_classes: usize,
    lambda: f64,
    start: Option<&[f64]>,
    solver: LbfgsParams,
    memory: &mut LbfgsMemory,
) -> (LinearModel, FitStats) {
    let obj = SoftmaxObjective {
        x: &data.features,
        y: &data.labels,
        d: data.dim,
        k: num_classes,
        lambda,
    };
    let x0 = start.map_or_else(|| vec![0.0; obj.num_params()], <[f64]>::to_vec);
    // Along -∇f the λ·I part of the Hessian alone makes any step beyond 1/λ overshoot.
    let solver = LbfgsParams {
        max_first_step: solver.max_first_step.min(1.0 / lambda),
        ..solver
    };
    let r = lbfgs::minimize_with_memory(
        &mut |t: &[f64], g: &mut [f64]| obj.value_grad(t, g),
        x0,
        solver,
        memory,
    );
    let stats = FitStats {
        iterations: r.iterations,
        evaluations: r.evaluations,
        stop: r.stop,
    };
    (
        LinearModel {
            theta: r.x,
            dim: data.dim,
            num_classes,
        },
        stats,
    )
}

/// Selects λ on a validation split of `train`, refits on all of `train`, scores `test`.
pub fn run_probe(
    mut train: ProbeData,
    mut test: ProbeData,
    cfg: &ProbeConfig,
) -> Result<ProbeReport> {
    let t0 = Instant::now();
    let d = train.dim;
    ensure!(
        d > 0 && train.features.len() == train.rows() * d,
        "probe: training features do not match {} labels of dimension {d}",
        train.rows()
    );
    ensure!(
        test.dim == d && test.features.len() == test.rows() * d,
        "probe: test features have dimension {} but training has {d}",
        test.dim
    );
    ensure!(
        !cfg.lambdas.is_empty() && cfg.lambdas.iter().all(|l| *l > 0.0),
        "probe: λ grid must be non-empty and positive"
    );
    ensure!(
        cfg.val_fraction > 0.0 && cfg.val_fraction < 1.0,
        "probe: validation fraction {} not in (0, 1)",
        cfg.val_fraction
    );
    let k = train
        .labels
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut present = vec![false; k];
    train
        .labels
        .iter()
        .for_each(|&y| present[y as usize] = true);
    if let Some(c) = present.iter().position(|p| !p) {
        anyhow::bail!(
            "probe: class {c} has no training samples (classes must be 0..K-1, all present)"
        );
    }
    ensure!(k >= 2, "probe: need at least two classes, found {k}");
    if let Some(y) = test.labels.iter().find(|&&y| y as usize >= k) {
        anyhow::bail!("probe: test label {y} never occurs in training (K = {k})");
    }
    if cfg.standardize {
        let s = Standardizer::fit(&train.features, d);
        s.apply(&mut train.features);
        s.apply(&mut test.features);
    }
    let (tr_idx, val_idx) = stratified_split(&train.labels, cfg.val_fraction, cfg.seed);
    ensure!(
        !tr_idx.is_empty() && !val_idx.is_empty(),
        "probe: validation split of {} samples is degenerate",
        train.rows()
    );
    let (fit_set, val_set) = (train.subset(&tr_idx), train.subset(&val_idx));

    let mut lambdas = cfg.lambdas.clone();
    lambdas.sort_by(|a, b| b.total_cmp(a));
    let mut path = Vec::with_capacity(lambdas.len());
    let mut warm: Option<Vec<f64>> = None;
    // Curvature pairs carried along the path: only the λI part of the Hessian changes.
    let mut memory = LbfgsMemory::default();
    let mut prev_lambda: Option<f64> = None;
    let mut best: Option<(f64, f64, Vec<f64>)> = None; // (val acc, λ, θ)
    for &lambda in &lambdas {
        if let Some(prev) = prev_lambda {
            memory.shift_curvature(0..k * d, lambda - prev);
        }
        prev_lambda = Some(lambda);
        let (model, st) = fit_with_memory(
            &fit_set,
            k,
            lambda,
            warm.as_deref(),
            cfg.solver,
            &mut memory,
        );
        let acc = model.accuracy(&val_set);
        let sklearn_c = 1.0 / (lambda * fit_set.rows() as f64);
        path.push(PathPoint {
            lambda,
            sklearn_c,
            val_accuracy: acc,
            iterations: st.iterations,
            evaluations: st.evaluations,
            stop: st.stop,
        });
        if best.as_ref().is_none_or(|b| acc > b.0) {
            best = Some((acc, lambda, model.theta.clone()));
        }
        warm = Some(model.theta);
    }
    let (chosen_val_accuracy, chosen_lambda, theta) = best.expect("λ grid is non-empty");
    let (model, refit) = fit(&train, k, chosen_lambda, Some(&theta), cfg.solver);
    Ok(ProbeReport {
        num_classes: k,
        dim: d,
        train_samples: fit_set.rows(),
        val_samples: val_set.rows(),
        test_samples: test.rows(),
        path,
        chosen_lambda,
        chosen_val_accuracy,
        refit_sklearn_c: 1.0 / (chosen_lambda * train.rows() as f64),
        refit_iterations: refit.iterations,
        test_accuracy: model.accuracy(&test),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
