//! Deterministic inputs and the norm-wise relative error used by every comparison.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use maxsup_rng::SplitMix64;

/// Uniform values in [-1, 1) from a fixed seed (SplitMix64), identical on every machine.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// `‖a - b‖ / ‖b‖` over all elements (in f64), and whether `a` is all finite.
pub fn rel_error(a: &Tensor, b: &Tensor) -> Result<(f64, bool)> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let av = a.to_vec1::<f64>()?;
    let finite = av.iter().all(|v| v.is_finite());
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let norm = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok((if norm > 0.0 { diff / norm } else { diff }, finite))
}
