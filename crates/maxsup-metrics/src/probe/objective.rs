//! The probe's objective: L2-regularised multinomial logistic regression,
//!   f(W, b) = (1/N) Σ_i CE(W x_i + b, y_i) + (λ/2) ||W||²
//! with an unpenalised intercept b: scikit-learn's lbfgs objective divided by its C·N, i.e.
//! `LogisticRegression(C = 1 / (λ · N))` (sklearn/linear_model/_logistic.py sets
//! `l2_reg_strength = 1 / (C · sw_sum)` on the mean loss and penalises `coef` only).
//!
//! Parameters θ = [W row-major (K×D), b (K)] in f64. Features and the weight copy used for the
//! products are f32 (see `kernel`); softmax and loss are f64, gradients are summed in f32 over 64
//! rows and in f64 beyond. Blocks run in parallel with rayon.

use rayon::prelude::*;

/// Borrowed training data for one fit.
pub struct SoftmaxObjective<'a> {
    /// Row-major [n, d].
    pub x: &'a [f32],
    pub y: &'a [u32],
    pub d: usize,
    pub k: usize,
    pub lambda: f64,
}

impl SoftmaxObjective<'_> {
    /// Number of parameters (K·D weights + K intercepts).
    pub fn num_params(&self) -> usize {
        self.k * self.d + self.k
    }

    fn rows(&self) -> usize {
        self.y.len()
    }

    /// Objective value at `theta`; writes the gradient into `grad`.
    pub fn value_grad(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d, k) = (self.rows(), self.d, self.k);
        let w32: Vec<f32> = theta[..k * d].iter().map(|&v| v as f32).collect();
        let bias = &theta[k * d..];
        let block = block_rows(n);
        let (loss, g) = (0..n.div_ceil(block))
            .into_par_iter()
            .map(|b| {
                let (r0, r1) = (b * block, ((b + 1) * block).min(n));
                self.block_loss_grad(&w32, bias, r0, r1)
            })
            .reduce_with(|(la, mut ga), (lb, gb)| {
                ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
                (la + lb, ga)
            })
            .unwrap_or_else(|| (0.0, vec![0.0; k * d + k]));
        let inv_n = 1.0 / n.max(1) as f64;
        let mut penalty = 0.0;
        for (i, (gi, &t)) in grad.iter_mut().zip(theta).enumerate() {
            *gi = g[i] * inv_n;
            if i < k * d {
                *gi += self.lambda * t;
                penalty += t * t;
            }
        }
        loss * inv_n + 0.5 * self.lambda * penalty
    }

    /// Summed (not averaged) cross-entropy and its gradient over rows `r0..r1`.
    fn block_loss_grad(&self, w32: &[f32], bias: &[f64], r0: usize, r1: usize) -> (f64, Vec<f64>) {
        let (d, k) = (self.d, self.k);
        let s = super::kernel::block_loss_grad(
            &self.x[r0 * d..r1 * d],
            &self.y[r0..r1],
            w32,
            bias,
            d,
            k,
        );
        let mut g = s.gw;
        g.extend_from_slice(&s.gb);
        (s.loss, g)
    }

    /// Class scores `W x + b` argmax (first index on ties) for each row of `x` [rows, d].
    pub fn predict(theta: &[f64], x: &[f32], d: usize, k: usize) -> Vec<u32> {
        let w = &theta[..k * d];
        let b = &theta[k * d..];
        x.par_chunks(d)
            .map(|row| {
                let mut best = (0u32, f64::NEG_INFINITY);
                for c in 0..k {
                    let s: f64 = w[c * d..(c + 1) * d]
                        .iter()
                        .zip(row)
                        .map(|(&wi, &xi)| wi * f64::from(xi))
                        .sum::<f64>()
                        + b[c];
                    if s > best.1 {
                        best = (c as u32, s);
                    }
                }
                best.0
            })
            .collect()
    }
}

/// Rows per parallel block: large enough for efficient matrix products, small enough to give
/// every core several blocks.
fn block_rows(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(threads * 4).clamp(256, 4096)
}
