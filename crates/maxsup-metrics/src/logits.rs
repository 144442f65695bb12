//! Logit statistics behind paper Fig. 5 (paper-facts §4.4): per sample, the share of logits near
//! zero (`|z| < threshold`, code default 0.01) and the top-1 softmax probability, plus a
//! fixed-range histogram for plotting those shares or the logit density over e.g. (-4, 4).

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

/// Equal-width histogram over `[lo, hi)` (the last bin also takes `hi`); values outside are
/// counted separately so densities stay normalised by everything pushed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    /// Values below `lo` (or NaN) and above `hi`.
    pub below: u64,
    pub above: u64,
}

impl Histogram {
    /// `bins` equal-width bins over `[lo, hi]`.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Result<Self> {
        ensure!(
            bins > 0 && lo < hi,
            "histogram: need bins > 0 and lo < hi, got {bins} bins over [{lo}, {hi}]"
        );
        Ok(Self {
            lo,
            hi,
            counts: vec![0; bins],
            below: 0,
            above: 0,
        })
    }

    /// Counts one value.
    pub fn push(&mut self, v: f64) {
        let m = self.counts.len();
        if v > self.hi {
            self.above += 1;
        } else if v >= self.lo {
            let i = (((v - self.lo) / (self.hi - self.lo)) * m as f64) as usize;
            self.counts[i.min(m - 1)] += 1;
        } else {
            self.below += 1;
        }
    }

    /// Counts every value.
    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        values.into_iter().for_each(|v| self.push(v));
    }

    /// Bin edges (`bins + 1` values).
    pub fn edges(&self) -> Vec<f64> {
        let m = self.counts.len();
        (0..=m)
            .map(|i| self.lo + (self.hi - self.lo) * i as f64 / m as f64)
            .collect()
    }

    /// Everything pushed, in range or not.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.below + self.above
    }

    /// Density estimate per bin: `count / (total · width)`, so the bars integrate to the share
    /// of values inside the range (1 when nothing fell outside).
    pub fn density(&self) -> Vec<f64> {
        let width = (self.hi - self.lo) / self.counts.len() as f64;
        let total = self.total().max(1) as f64;
        self.counts
            .iter()
            .map(|&c| c as f64 / (total * width))
            .collect()
    }
}
