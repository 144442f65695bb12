//! Limited-memory BFGS (Nocedal & Wright Alg. 7.4/7.5): two-loop recursion with the scaled
//! identity γ = sᵀy / yᵀy as initial Hessian, strong-Wolfe line search, and the stopping rules of
//! scipy's L-BFGS-B as used by scikit-learn (`gtol` on the max-abs gradient, `ftol` on the
//! relative decrease) so fits are comparable.

use super::line_search::{strong_wolfe, WolfeParams};
use std::collections::VecDeque;

/// Solver settings.
#[derive(Clone, Copy, Debug)]
pub struct LbfgsParams {
    /// Stored correction pairs (scipy default 10).
    pub memory: usize,
    pub max_iter: usize,
    /// Stop when max_i |∇f_i| <= gtol (scikit-learn's `tol`, default 1e-4).
    pub gtol: f64,
    /// Stop when (f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol (scikit-learn: 64·ε).
    pub ftol: f64,
    /// Upper bound on the first trial step along -∇f when no curvature pairs are known (the
    /// default step is 1/||∇f||); e.g. 1/λ for an objective with an L2 term of strength λ.
    pub max_first_step: f64,
    pub wolfe: WolfeParams,
}

impl Default for LbfgsParams {
    fn default() -> Self {
        Self {
            memory: 10,
            max_iter: 1000,
            gtol: 1e-4,
            ftol: 64.0 * f64::EPSILON,
            max_first_step: f64::INFINITY,
            wolfe: WolfeParams::default(),
        }
    }
}

/// Why the solver stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StopReason {
    GradientTolerance,
    RelativeDecrease,
    MaxIterations,
    /// No step with sufficient decrease even along steepest descent: the objective cannot be
    /// reduced further at working precision.
    LineSearchFailed,
}

/// Result of a minimisation.
#[derive(Clone, Debug)]
pub struct LbfgsResult {
    pub x: Vec<f64>,
    pub f: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: StopReason,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// The stored correction pairs (s, y, 1/yᵀs), oldest first. Kept between fits so that a
/// warm-started fit of a slightly different objective starts with curvature information.
#[derive(Clone, Debug, Default)]
pub struct LbfgsMemory {
    pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)>,
}

impl LbfgsMemory {
    /// Adds `delta · s` to each y on the coordinates `range` (the Hessian of the new objective is
    /// the old one plus `delta · I` there, e.g. after changing an L2 strength by `delta`), then
    /// drops pairs whose curvature `yᵀs` is no longer positive.
    pub fn shift_curvature(&mut self, range: std::ops::Range<usize>, delta: f64) {
        for (s, y, rho) in self.pairs.iter_mut() {
            for i in range.clone() {
                y[i] += delta * s[i];
            }
            let ys = dot(y, s);
            *rho = if ys > f64::EPSILON * dot(y, y) {
                1.0 / ys
            } else {
                0.0
            };
        }
        self.pairs.retain(|p| p.2 > 0.0);
    }

    /// Number of stored pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when no pair is stored.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Minimises `eval` (returns f, writes ∇f) from `x0`.
pub fn minimize(
    eval: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
    x0: Vec<f64>,
    p: LbfgsParams,
) -> LbfgsResult {
    minimize_with_memory(eval, x0, p, &mut LbfgsMemory::default())
}

/// [`minimize`] starting from (and updating) the correction pairs in `memory`.
pub fn minimize_with_memory(
    eval: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
    x0: Vec<f64>,
    p: LbfgsParams,
    memory: &mut LbfgsMemory,
) -> LbfgsResult {
    let pairs = &mut memory.pairs;
    while pairs.len() > p.memory {
        pairs.pop_front();
    }
    let mut x = x0;
    let mut g = vec![0.0; x.len()];
    let mut f = eval(&x, &mut g);
    let mut evaluations = 1;
    let mut iterations = 0;
    let stop = loop {
        if max_abs(&g) <= p.gtol {
            break StopReason::GradientTolerance;
        }
        if iterations >= p.max_iter {
            break StopReason::MaxIterations;
        }
        let mut dir = two_loop(&g, pairs);
        let mut df0 = dot(&g, &dir);
        if df0 >= 0.0 {
            // Not a descent direction (can only come from round-off): restart.
            pairs.clear();
            dir = g.iter().map(|v| -v).collect();
            df0 = dot(&g, &dir);
        }
        let alpha0 = if pairs.is_empty() {
            (1.0 / dot(&dir, &dir).sqrt())
                .min(1.0)
                .min(p.max_first_step)
        } else {
            1.0
        };
        let mut trial = strong_wolfe(eval, &x, f, df0, &dir, alpha0, p.wolfe, &mut evaluations);
        if trial.is_none() && !pairs.is_empty() {
            pairs.clear();
            let sd: Vec<f64> = g.iter().map(|v| -v).collect();
            let alpha0 = (1.0 / dot(&sd, &sd).sqrt()).min(1.0).min(p.max_first_step);
            trial = strong_wolfe(
                eval,
                &x,
                f,
                dot(&g, &sd),
                &sd,
                alpha0,
                p.wolfe,
                &mut evaluations,
            );
        }
        let Some(t) = trial else {
            break StopReason::LineSearchFailed;
        };
        iterations += 1;
        let s: Vec<f64> = t.x.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = t.g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let ys = dot(&y, &s);
        // Keep the pair only with positive curvature (always true under strong Wolfe, but a
        // budget-exhausted Armijo-only step may violate it).
        if ys > f64::EPSILON * dot(&y, &y) {
            if pairs.len() == p.memory {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / ys));
        }
        let decrease = (f - t.f) / f.abs().max(t.f.abs()).max(1.0);
        x = t.x;
        g = t.g;
        f = t.f;
        if decrease <= p.ftol {
            break StopReason::RelativeDecrease;
        }
    };
    LbfgsResult {
        x,
        f,
        iterations,
        evaluations,
        stop,
    }
}

/// d = -H g with H the L-BFGS inverse-Hessian approximation.
fn two_loop(g: &[f64], pairs: &VecDeque<(Vec<f64>, Vec<f64>, f64)>) -> Vec<f64> {
    let mut q = g.to_vec();
    let mut alphas = Vec::with_capacity(pairs.len());
    for (s, y, rho) in pairs.iter().rev() {
        let a = rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
        alphas.push(a);
    }
    if let Some((s, y, _)) = pairs.back() {
        let gamma = dot(s, y) / dot(y, y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
        let b = rho * dot(y, &q);
        q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_the_rosenbrock_function() {
        let mut rosen = |x: &[f64], g: &mut [f64]| {
            let n = x.len();
            let mut f = 0.0;
            g.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..n - 1 {
                let (a, b) = (1.0 - x[i], x[i + 1] - x[i] * x[i]);
                f += a * a + 100.0 * b * b;
                g[i] += -2.0 * a - 400.0 * x[i] * b;
                g[i + 1] += 200.0 * b;
            }
            f
        };
        let p = LbfgsParams {
            gtol: 1e-9,
            ftol: 0.0,
            ..Default::default()
        };
        let r = minimize(&mut rosen, vec![-1.2, 1.0, -1.2, 1.0, 0.5], p);
        assert!(r.x.iter().all(|v| (v - 1.0).abs() < 1e-6), "{r:?}");
        assert_eq!(r.stop, StopReason::GradientTolerance);
        assert!(r.iterations < 200, "{} iterations", r.iterations);
    }

    #[test]
    fn solves_an_ill_conditioned_quadratic_exactly_enough() {
        let scales = [1.0, 10.0, 100.0, 1000.0];
        let mut quad = |x: &[f64], g: &mut [f64]| {
            let mut f = 0.0;
            for i in 0..4 {
                g[i] = scales[i] * (x[i] - i as f64);
                f += 0.5 * scales[i] * (x[i] - i as f64).powi(2);
            }
            f
        };
        let p = LbfgsParams {
            gtol: 1e-10,
            ftol: 0.0,
            ..Default::default()
        };
        let r = minimize(&mut quad, vec![5.0; 4], p);
        for i in 0..4 {
            assert!((r.x[i] - i as f64).abs() < 1e-9, "{r:?}");
        }
    }
}
