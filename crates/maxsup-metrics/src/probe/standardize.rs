//! Per-feature standardisation (zero mean, unit variance), as scikit-learn's StandardScaler.
//!
//! WHY: raw penultimate features (e.g. post-ReLU ResNet activations) have very different scales
//! per dimension, which makes L-BFGS slow; standardising makes the problem well conditioned.
//! The statistics come from the whole training file and are applied unchanged to the test file.

/// Mean and standard deviation per feature (population std, ddof = 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Statistics of `features` row-major [rows, d]; constant features get std 1 (left as is).
    pub fn fit(features: &[f32], d: usize) -> Self {
        let rows = (features.len() / d.max(1)).max(1) as f64;
        let mut mean = vec![0.0f64; d];
        for row in features.chunks_exact(d) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= rows);
        let mut var = vec![0.0f64; d];
        for row in features.chunks_exact(d) {
            var.iter_mut()
                .zip(row)
                .zip(&mean)
                .for_each(|((s, &v), m)| *s += (f64::from(v) - m).powi(2));
        }
        let std = var
            .into_iter()
            .map(|s| (s / rows).sqrt())
            .map(|s| if s > 1e-12 { s } else { 1.0 })
            .collect();
        Self { mean, std }
    }

    /// Standardises `features` row-major [rows, d] in place.
    pub fn apply(&self, features: &mut [f32]) {
        let d = self.mean.len();
        for row in features.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = ((f64::from(*v) - m) / s) as f32;
            }
        }
    }
}
