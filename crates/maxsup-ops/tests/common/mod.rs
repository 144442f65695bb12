//! Shared helpers for the exactness tests: random tensors, gradient comparison, finite differences.
#![allow(dead_code)]

pub mod branch;

use candle_core::{Device, Result, Tensor, Var};

/// Deterministic pseudo-random f32 values in [-1, 1) (xorshift; no rand dependency needed).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn rand_var(shape: &[usize], seed: u64) -> Result<Var> {
    let n = shape.iter().product();
    Var::from_tensor(&Tensor::from_vec(rand_vec(n, seed), shape, &Device::Cpu)?)
}

pub fn rand_tensor(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(rand_vec(n, seed), shape, &Device::Cpu)
}

/// max |a - b| / max(max |b|, 1e-6): relative error in the max norm.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = b
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?
        .max(1e-6);
    Ok(diff / scale)
}

/// Asserts `a` matches `b` to `tol` relative (max norm), naming `what` on failure.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) -> Result<()> {
    let e = rel_err(a, b)?;
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
    Ok(())
}

/// Runs `f` on the vars, contracts the output with a fixed random tensor, and returns the output
/// and the gradient of every var.
pub fn output_and_grads(
    vars: &[&Var],
    f: &dyn Fn() -> Result<Tensor>,
    seed: u64,
) -> Result<(Tensor, Vec<Tensor>)> {
    let y = f()?;
    let r = rand_tensor(y.dims(), seed)?;
    let loss = (&y * &r)?.sum_all()?;
    let grads = loss.backward()?;
    let gs = vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("missing grad".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((y, gs))
}

/// Compares the gradient `grad` of `sum(f() * r)` w.r.t. `var` with central differences at a
/// few random coordinates, to `tol` relative to the largest gradient entry.
pub fn check_finite_diff(
    var: &Var,
    grad: &Tensor,
    f: &dyn Fn() -> Result<Tensor>,
    seed: u64,
    tol: f32,
) -> Result<()> {
    let y0 = f()?;
    let r = rand_tensor(y0.dims(), seed)?;
    let r64 = r.to_dtype(candle_core::DType::F64)?;
    let loss = || -> Result<f64> {
        (&f()?.to_dtype(candle_core::DType::F64)? * &r64)?
            .sum_all()?
            .to_scalar::<f64>()
    };
    let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let g = grad.flatten_all()?.to_vec1::<f32>()?;
    let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    let n = base.len();
    let eps = 1e-2f32;
    for (i, idx) in rand_vec(6, seed + 7)
        .iter()
        .map(|u| (((u + 1.0) / 2.0) * n as f32) as usize % n)
        .enumerate()
    {
        let mut p = base.clone();
        p[idx] += eps;
        var.set(&Tensor::from_vec(p.clone(), var.shape(), &Device::Cpu)?)?;
        let lp = loss()?;
        p[idx] -= 2.0 * eps;
        var.set(&Tensor::from_vec(p, var.shape(), &Device::Cpu)?)?;
        let lm = loss()?;
        var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu)?)?;
        let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
        let err = (fd - g[idx]).abs() / gmax;
        assert!(
            err <= tol,
            "finite difference #{i} at {idx}: fd {fd} vs grad {} (rel {err:e})",
            g[idx]
        );
    }
    Ok(())
}
