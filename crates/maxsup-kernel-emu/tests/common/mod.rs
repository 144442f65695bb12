//! Shared by the kernel tests: element types, random data, CPU references and comparisons.
#![allow(dead_code)]

use candle_core::{Device, Tensor, Var};
use half::bf16;
use maxsup_kernel_emu::{column_sum_f32, launch, Kernels, BF16, F32};
use maxsup_ops::kernel_geometry as geom;
use maxsup_rng::SplitMix64;

/// A storage type of the kernels, with its table and the tolerance of a result stored in it
/// (relative to max(1, |reference|)).
pub trait Elem: Copy + 'static {
    const NAME: &'static str;
    const TOL: f32;
    fn kernels() -> Kernels<Self>;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}
impl Elem for f32 {
    const NAME: &'static str = "f32";
    const TOL: f32 = 2e-5;
    fn kernels() -> Kernels<f32> {
        F32
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    const NAME: &'static str = "bf16";
    const TOL: f32 = 1.0 / 256.0;
    fn kernels() -> Kernels<bf16> {
        BF16
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// `n` values `offset + scale * N(0, 1)`, already representable in `E` (so the CPU reference
/// sees exactly the kernel's input).
pub fn random<E: Elem>(n: usize, seed: u64, scale: f32, offset: f32) -> Vec<E> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| E::from_f32(offset + scale * rng.next_normal() as f32))
        .collect()
}

pub fn widen<E: Elem>(v: &[E]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

pub fn zeros<E: Elem>(n: usize) -> Vec<E> {
    vec![E::from_f32(0.0); n]
}

pub fn cpu(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu).expect("tensor")
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
}

/// `op(x)` and the gradient of `sum(op(x) * dy)` with respect to `x` and `params`, on the CPU.
pub fn with_grads(
    x: &[f32],
    shape: &[usize],
    params: &[&Var],
    dy: &[f32],
    op: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let xv = Var::from_tensor(&cpu(x, shape)).expect("var");
    let y = op(xv.as_tensor()).expect("forward");
    let dy = cpu(dy, y.dims());
    let grads = (&y * &dy)
        .and_then(|p| p.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    let dx = values(grads.get(&xv).expect("input gradient"));
    let dp = params
        .iter()
        .map(|p| values(grads.get(p).expect("parameter gradient")))
        .collect();
    (values(&y), dx, dp)
}

/// Every `got[i]` within `tol * max(1, |want[i]|)` of `want[i]`; a NaN only where `want` has one.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || g.is_nan() {
            assert!(w.is_nan() && g.is_nan(), "{what}[{i}]: got {g}, want {w}");
            continue;
        }
        let err = (g - w).abs() / w.abs().max(1.0);
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let (i, err) = worst;
    assert!(
        err <= tol,
        "{what}: [{i}] got {}, want {} (relative error {err:e} > {tol:e})",
        got[i],
        want[i]
    );
}

/// The values of `want` rounded to `E` and back (what a kernel storing `E` can at best return).
pub fn stored<E: Elem>(want: &[f32]) -> Vec<f32> {
    want.iter().map(|&v| E::from_f32(v).to_f32()).collect()
}

/// Adds the `[splits][n]` partial sums with `column_sum_f32`, as the CUDA launchers do.
pub fn finish_column_sums(partial: &[f32], splits: usize, n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    let (pp, op) = (partial.as_ptr(), out.as_mut_ptr());
    launch(geom::column_sum(n), || unsafe {
        column_sum_f32(pp, op, splits as i32, n as i32)
    })
    .unwrap();
    out
}

/// The bias gradient of a row-major `[m, n]` gradient as the separate kernels give it
/// (`bias_grad_partial` over `column_splits(m, n)` splits, then `column_sum_f32`).
pub fn separate_bias_grad<E: Elem>(g: &[E], m: usize, n: usize) -> Vec<f32> {
    let splits = geom::column_splits(m, n);
    let mut partial = vec![f32::NAN; splits * n];
    let (gp, pp) = (g.as_ptr(), partial.as_mut_ptr());
    launch(geom::column_reduce(n, splits), || unsafe {
        (E::kernels().bias_grad_partial)(gp, pp, m, n as i32, splits as i32)
    })
    .unwrap();
    finish_column_sums(&partial, splits, n)
}
