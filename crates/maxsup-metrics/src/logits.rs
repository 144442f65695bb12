//! Logit statistics behind paper Fig. 5: per sample, the share of logits near
//! zero (`|z| < threshold`, code default 0.01) and the top-1 softmax probability, (plotted with
//! [`crate::Histogram`], e.g. the logit density over (-4, 4)).

use crate::softmax_row::top1_probability;
use anyhow::{ensure, Result};
use serde::Serialize;

/// Default near-zero threshold of the official analysis code (its notebook also uses 0.001).
pub const DEFAULT_NEAR_ZERO_THRESHOLD: f32 = 0.01;

/// Fraction of entries of `row` with `|z| < threshold`.
pub fn near_zero_share(row: &[f32], threshold: f32) -> f64 {
    row.iter().filter(|z| z.abs() < threshold).count() as f64 / row.len().max(1) as f64
}

/// Per-sample statistics of a batch of logits.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LogitSummary {
    /// Share of near-zero logits, one per sample.
    pub near_zero_share: Vec<f64>,
    /// Top-1 softmax probability, one per sample.
    pub top1_probability: Vec<f64>,
}

/// Computes [`LogitSummary`] for `logits` row-major [rows, k].
pub fn analyze_logits(logits: &[f32], k: usize, threshold: f32) -> Result<LogitSummary> {
    ensure!(
        k > 0 && logits.len().is_multiple_of(k),
        "logit analysis: {} values is not a whole number of rows of K={k}",
        logits.len()
    );
    let rows = logits.chunks_exact(k);
    Ok(LogitSummary {
        near_zero_share: rows
            .clone()
            .map(|r| near_zero_share(r, threshold))
            .collect(),
        top1_probability: rows.map(top1_probability).collect(),
    })
}
