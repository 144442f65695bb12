//! Kornblith et al. (2021) class separation of penultimate features:
//! mean within-class cosine distance `d_within`, mean total cosine distance `d_total` and
//! `R^2 = 1 - d_within / d_total`.
//!
//! With cosine distance `1 - x̂·x̂'` (x̂ = x/||x||), self-pairs included and per-class averaging,
//! the pairwise double sums collapse onto the per-class means μ_k of the normalised features:
//!   d_within = (1/K) Σ_k (1/N_k²) Σ_m Σ_n (1 - x̂_m·x̂_n) = 1 - (1/K) Σ_k ||μ_k||²
//!   d_total  = (1/K²) Σ_j Σ_k (1/(N_j N_k)) Σ_m Σ_n (1 - x̂_m·x̂_n) = 1 - ||(1/K) Σ_k μ_k||²
//! so one O(N·D) pass with O(K·D) memory gives the exact values (checked against the pairwise
//! definition in tests). Sums are kept in f64 because millions of unit vectors are added.

use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::Serialize;

/// The three numbers reported in paper Tab. 2/14.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeparationMetrics {
    /// Mean within-class cosine distance (higher = more intra-class variation kept).
    pub d_within: f64,
    /// Mean cosine distance over all pairs of classes (class-balanced).
    pub d_total: f64,
    /// `1 - d_within / d_total` (higher = better-separated classes).
    pub r2: f64,
    /// Classes with at least one sample (K in the formulas).
    pub num_classes: usize,
    /// Samples seen.
    pub num_samples: u64,
}

/// Streaming accumulator of per-class sums of L2-normalised features.
#[derive(Clone, Debug)]
pub struct ClassSeparation {
    dim: usize,
    /// `sums[c]` = Σ x̂ over samples of class c (allocated lazily when class c first appears).
    sums: Vec<Vec<f64>>,
    counts: Vec<u64>,
    seen: u64,
}

impl ClassSeparation {
    /// An empty accumulator for `dim`-dimensional features.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            sums: Vec::new(),
            counts: Vec::new(),
            seen: 0,
        }
    }

    /// Adds a batch: `features` row-major [rows, dim], `labels` one class index per row.
    /// Rejects zero or non-finite feature vectors (their cosine distance is undefined).
    pub fn push(&mut self, features: &[f32], labels: &[u32]) -> Result<()> {
        let d = self.dim;
        ensure!(
            features.len() == labels.len() * d,
            "class separation: {} feature values for {} labels of dimension {d}",
            features.len(),
            labels.len()
        );
        let inv_norms: Vec<f64> = features
            .par_chunks(d.max(1))
            .map(|row| {
                1.0 / row
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        if let Some(bad) = inv_norms.iter().position(|s| !s.is_finite()) {
            anyhow::bail!(
                "class separation: sample {} has a zero or non-finite feature vector (cosine distance undefined)",
                self.seen + bad as u64
            );
        }
        let top = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        if top > self.sums.len() {
            self.sums.resize(top, Vec::new());
            self.counts.resize(top, 0);
        }
        for ((row, &y), &s) in features.chunks_exact(d.max(1)).zip(labels).zip(&inv_norms) {
            let sum = &mut self.sums[y as usize];
            if sum.is_empty() {
                sum.resize(d, 0.0);
            }
            for (acc, &v) in sum.iter_mut().zip(row) {
                *acc += f64::from(v) * s;
            }
            self.counts[y as usize] += 1;
        }
        self.seen += labels.len() as u64;
        Ok(())
    }

    /// Samples pushed so far.
    pub fn num_samples(&self) -> u64 {
        self.seen
    }

    /// Evaluates the closed forms; needs at least one class and a non-zero `d_total`.
    pub fn finish(&self) -> Result<SeparationMetrics> {
        let d = self.dim;
        let mut sum_sq_means = 0.0;
        let mut mean_of_means = vec![0.0f64; d];
        let mut k = 0usize;
        for (sum, &n) in self.sums.iter().zip(&self.counts) {
            if n == 0 {
                continue;
            }
            k += 1;
            let inv = 1.0 / n as f64;
            let mut sq = 0.0;
            for (m, &s) in mean_of_means.iter_mut().zip(sum) {
                let mu = s * inv;
                sq += mu * mu;
                *m += mu;
            }
            sum_sq_means += sq;
        }
        ensure!(k > 0, "class separation: no samples were pushed");
        // With one class d_total equals d_within and R^2 is 0 by construction: a number that
        // looks like a measurement of separability and is not one.
        ensure!(
            k >= 2,
            "class separation needs samples of at least 2 classes; all samples have the same label"
        );
        let kf = k as f64;
        let d_within = 1.0 - sum_sq_means / kf;
        let d_total = 1.0
            - mean_of_means
                .iter()
                .map(|m| (m / kf) * (m / kf))
                .sum::<f64>();
        ensure!(
            d_total > 0.0,
            "class separation: d_total is {d_total} (all {k} class means coincide), R^2 undefined"
        );
        Ok(SeparationMetrics {
            d_within,
            d_total,
            r2: 1.0 - d_within / d_total,
            num_classes: k,
            num_samples: self.seen,
        })
    }
}
