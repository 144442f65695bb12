//! Strong-Wolfe line search (Nocedal & Wright, Numerical Optimization, Alg. 3.5 + 3.6 "zoom"),
//! with safeguarded cubic interpolation in the zoom phase.

/// One evaluated point along the search direction.
#[derive(Clone, Debug)]
pub struct Trial {
    pub alpha: f64,
    pub f: f64,
    /// Directional derivative `∇f(x + αd)·d`.
    pub df: f64,
    pub x: Vec<f64>,
    pub g: Vec<f64>,
}

/// Constants of the Wolfe conditions and the evaluation budget.
#[derive(Clone, Copy, Debug)]
pub struct WolfeParams {
    /// Sufficient decrease: f(α) <= f(0) + c1·α·f'(0).
    pub c1: f64,
    /// Curvature: |f'(α)| <= c2·|f'(0)|.
    pub c2: f64,
    pub max_evals: usize,
}

impl Default for WolfeParams {
    fn default() -> Self {
        Self {
            c1: 1e-4,
            c2: 0.9,
            max_evals: 50,
        }
    }
}

/// Searches along `dir` from `x0` (value `f0`, directional derivative `df0 < 0`) starting at
/// `alpha0`. Returns the accepted point, or `None` if no point with sufficient decrease was
/// found within the budget; `evals` counts objective evaluations.
#[allow(clippy::too_many_arguments)]
pub fn strong_wolfe(
    eval: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    f0: f64,
    df0: f64,
    dir: &[f64],
    alpha0: f64,
    p: WolfeParams,
    evals: &mut usize,
) -> Option<Trial> {
    let mut try_at = |alpha: f64, evals: &mut usize| -> Trial {
        let x: Vec<f64> = x0.iter().zip(dir).map(|(xi, di)| xi + alpha * di).collect();
        let mut g = vec![0.0; x.len()];
        let f = eval(&x, &mut g);
        *evals += 1;
        let df = g.iter().zip(dir).map(|(a, b)| a * b).sum();
        Trial { alpha, f, df, x, g }
    };
    let armijo = |t: &Trial| t.f.is_finite() && t.f <= f0 + p.c1 * t.alpha * df0;
    let curvature = |t: &Trial| t.df.abs() <= -p.c2 * df0;

    let start = *evals;
    let mut prev = Trial {
        alpha: 0.0,
        f: f0,
        df: df0,
        x: x0.to_vec(),
        g: Vec::new(),
    };
    let mut alpha = alpha0;
    let mut first = true;
    loop {
        if *evals - start >= p.max_evals {
            return None;
        }
        let t = try_at(alpha, evals);
        if !armijo(&t) || (!first && t.f >= prev.f) {
            return zoom(&mut try_at, prev, t, &armijo, &curvature, start, p, evals);
        }
        if curvature(&t) {
            return Some(t);
        }
        if t.df >= 0.0 {
            return zoom(&mut try_at, t, prev, &armijo, &curvature, start, p, evals);
        }
        // Still descending with sufficient decrease: extrapolate (×4, as MINPACK-2's dcsrch).
        alpha = t.alpha * 4.0;
        prev = t;
        first = false;
    }
}

/// Zoom between `lo` (satisfies Armijo, lowest value so far) and `hi`.
#[allow(clippy::too_many_arguments)]
fn zoom(
    try_at: &mut dyn FnMut(f64, &mut usize) -> Trial,
    mut lo: Trial,
    mut hi: Trial,
    armijo: &dyn Fn(&Trial) -> bool,
    curvature: &dyn Fn(&Trial) -> bool,
    start: usize,
    p: WolfeParams,
    evals: &mut usize,
) -> Option<Trial> {
    loop {
        if *evals - start >= p.max_evals
            || (hi.alpha - lo.alpha).abs() <= 1e-16 * lo.alpha.abs().max(1e-300)
        {
            // Out of budget or interval collapsed: accept the best sufficient-decrease point.
            return (lo.alpha > 0.0).then_some(lo);
        }
        let alpha = safeguarded_cubic(&lo, &hi);
        let t = try_at(alpha, evals);
        if !armijo(&t) || t.f >= lo.f {
            hi = t;
        } else {
            if curvature(&t) {
                return Some(t);
            }
            if t.df * (hi.alpha - lo.alpha) >= 0.0 {
                hi = lo;
            }
            lo = t;
        }
    }
}

/// Minimiser of the cubic through (α, f, f') at both ends, kept at least 10% of the interval
/// away from its ends; bisection when the cubic is degenerate or non-finite.
fn safeguarded_cubic(a: &Trial, b: &Trial) -> f64 {
    let (lo, hi) = (a.alpha.min(b.alpha), a.alpha.max(b.alpha));
    let width = hi - lo;
    let d1 = a.df + b.df - 3.0 * (a.f - b.f) / (a.alpha - b.alpha);
    let disc = d1 * d1 - a.df * b.df;
    let mid = 0.5 * (lo + hi);
    if !disc.is_finite() || disc < 0.0 || !b.f.is_finite() {
        return mid;
    }
    let d2 = (b.alpha - a.alpha).signum() * disc.sqrt();
    let denom = b.df - a.df + 2.0 * d2;
    if denom == 0.0 || !denom.is_finite() {
        return mid;
    }
    let cand = b.alpha - (b.alpha - a.alpha) * (b.df + d2 - d1) / denom;
    if cand.is_finite() && cand >= lo + 0.1 * width && cand <= hi - 0.1 * width {
        cand
    } else {
        mid
    }
}
