//! Per-row softmax facts shared by the calibration and logit statistics, in f64 for stability.

use anyhow::{ensure, Result};

/// What calibration needs from one row of logits and its label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowFacts {
    /// Top-1 softmax probability (confidence of the prediction).
    pub confidence: f64,
    /// Rank of the label when sorting logits descending, ties broken by lower index first
    /// (so rank 0 == "argmax, first occurrence, equals the label").
    pub label_rank: usize,
    /// `-log softmax(z)[label]`.
    pub nll: f64,
}

/// `max_j z_j + ln Σ_j exp(z_j - max)`: log-sum-exp without overflow.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &z| m.max(f64::from(z)));
    max + row
        .iter()
        .map(|&z| (f64::from(z) - max).exp())
        .sum::<f64>()
        .ln()
}

/// Top-1 softmax probability of one row: `exp(z_max - lse)`.
pub fn top1_probability(row: &[f32]) -> f64 {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &z| m.max(f64::from(z)));
    (max - log_sum_exp(row)).exp()
}

/// Confidence, label rank and NLL of one row; `row_index` only names the row in errors.
pub fn row_facts(row: &[f32], label: u32, row_index: u64) -> Result<RowFacts> {
    ensure!(
        (label as usize) < row.len(),
        "row {row_index}: label {label} is not below the number of logits {}",
        row.len()
    );
    ensure!(
        row.iter().all(|z| z.is_finite()),
        "row {row_index}: logits contain NaN or infinity"
    );
    let y = label as usize;
    let zy = row[y];
    let label_rank = row
        .iter()
        .enumerate()
        .filter(|&(j, &z)| z > zy || (z == zy && j < y))
        .count();
    let lse = log_sum_exp(row);
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &z| m.max(f64::from(z)));
    Ok(RowFacts {
        confidence: (max - lse).exp(),
        label_rank,
        nll: lse - f64::from(zy),
    })
}
