//! The one equal-width histogram of the workspace: streaming (`push`) for the metrics, and the
//! numbers behind the logit-analysis plots (`maxsup-viz` draws these).
//!
//! Semantics follow `numpy.histogram(values, bins, range)`: bins are half-open `[e_i, e_{i+1})`
//! except the last, which also takes the right edge, and the stored edges decide (not a rounded
//! estimate); values outside the range (and NaN) are not binned but counted in `below` / `above`;
//! the density divides by the in-range count, so it integrates to 1 over the range whenever
//! anything fell inside (numpy's `density=True`).

use anyhow::{ensure, Result};
use serde::Serialize;

/// Counts of values in equal-width bins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    /// `bins + 1` increasing edges, `edges[0]` and `edges[bins]` being the range ends.
    pub edges: Vec<f64>,
    /// Count per bin.
    pub counts: Vec<u64>,
    /// Values below the range, or NaN.
    pub below: u64,
    /// Values above the range.
    pub above: u64,
}

impl Histogram {
    /// `bins` empty equal-width bins over the closed range `[lo, hi]`.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Result<Self> {
        ensure!(bins > 0, "histogram needs at least one bin");
        ensure!(
            lo.is_finite() && hi.is_finite() && lo < hi,
            "histogram range ({lo}, {hi}) must be finite with lo < hi"
        );
        Ok(Self {
            edges: (0..=bins)
                .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
                .collect(),
            counts: vec![0; bins],
            below: 0,
            above: 0,
        })
    }

    /// Bins `values` into `bins` equal-width bins over the closed `range`.
    pub fn compute<T: Copy + Into<f64>>(
        values: &[T],
        range: (f64, f64),
        bins: usize,
    ) -> Result<Self> {
        let mut h = Self::new(range.0, range.1, bins)?;
        h.extend(values.iter().map(|&v| v.into()));
        Ok(h)
    }

    /// Counts one value.
    pub fn push(&mut self, v: f64) {
        let (lo, hi) = (self.edges[0], self.edges[self.bins()]);
        if v > hi {
            self.above += 1;
        } else if v >= lo {
            let i = self.bin_index(v);
            self.counts[i] += 1;
        } else {
            self.below += 1; // also NaN, which no comparison admits
        }
    }

    /// Counts every value.
    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        values.into_iter().for_each(|v| self.push(v));
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Width of every bin.
    pub fn bin_width(&self) -> f64 {
        (self.edges[self.bins()] - self.edges[0]) / self.bins() as f64
    }

    /// Midpoint of each bin.
    pub fn centers(&self) -> Vec<f64> {
        self.edges.windows(2).map(|e| 0.5 * (e[0] + e[1])).collect()
    }

    /// Values that landed in a bin.
    pub fn in_range(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Values outside the range, or NaN.
    pub fn outside(&self) -> u64 {
        self.below + self.above
    }

    /// Everything counted, in range or not.
    pub fn total(&self) -> u64 {
        self.in_range() + self.outside()
    }

    /// `count / (in_range · width)` per bin; all zeros when nothing fell inside the range.
    pub fn density(&self) -> Vec<f64> {
        let n = self.in_range();
        if n == 0 {
            return vec![0.0; self.bins()];
        }
        let scale = 1.0 / (n as f64 * self.bin_width());
        self.counts.iter().map(|&c| c as f64 * scale).collect()
    }

    /// Bin of an in-range value, consistent with the stored edges (the arithmetic estimate can
    /// be off by one next to an edge through rounding; the edges decide).
    fn bin_index(&self, v: f64) -> usize {
        let bins = self.bins();
        let (lo, hi) = (self.edges[0], self.edges[bins]);
        let mut i = ((((v - lo) / (hi - lo)) * bins as f64) as usize).min(bins - 1);
        if i > 0 && v < self.edges[i] {
            i -= 1;
        } else if i + 1 < bins && v >= self.edges[i + 1] {
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_edges_and_outside_match_numpy_rules() {
        // numpy.histogram([-1, 0, 0.25, 0.5, 0.75, 1, 2, nan], bins=4, range=(0, 1)) -> [1, 1, 1, 2]
        let h = Histogram::compute(
            &[-1.0f32, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0, f32::NAN],
            (0.0, 1.0),
            4,
        )
        .unwrap();
        assert_eq!(h.edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(h.counts, vec![1, 1, 1, 2]);
        assert_eq!((h.below, h.above, h.outside()), (2, 1, 3));
        assert_eq!(h.centers(), vec![0.125, 0.375, 0.625, 0.875]);
    }

    #[test]
    fn value_on_a_rounded_edge_goes_to_the_upper_bin() {
        // 0.3 is edge 3 of (0, 1) in 10 bins; (0.3 - 0) / 1 * 10 = 2.9999999999999996 in f64.
        let h = Histogram::compute(&[0.3f64], (0.0, 1.0), 10).unwrap();
        assert_eq!(h.counts[3], 1, "{:?}", h.counts);
    }

    #[test]
    fn density_integrates_to_one_and_has_exact_values() {
        let h = Histogram::compute(&[-4.0f32, -1.0, 0.5, 0.5, 3.0, 9.0], (-4.0, 4.0), 4).unwrap();
        assert_eq!(h.counts, vec![1, 1, 2, 1]);
        // 5 values in range, width 2: density = count / 10.
        assert_eq!(h.density(), vec![0.1, 0.1, 0.2, 0.1]);
        let integral: f64 = h.density().iter().map(|d| d * h.bin_width()).sum();
        assert!((integral - 1.0).abs() < 1e-12);
    }

    #[test]
    fn empty_range_gives_zero_density_and_bad_arguments_are_rejected() {
        let h = Histogram::compute::<f32>(&[], (0.0, 1.0), 3).unwrap();
        assert_eq!(h.density(), vec![0.0; 3]);
        assert!(Histogram::compute(&[1.0f32], (0.0, 1.0), 0).is_err());
        assert!(Histogram::compute(&[1.0f32], (1.0, 1.0), 2).is_err());
        assert!(Histogram::compute(&[1.0f32], (0.0, f64::NAN), 2).is_err());
    }
}
