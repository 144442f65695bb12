//! Stochastic depth ("drop path"), as in timm: in training each sample's residual branch is
//! zeroed with probability `rate` and the kept ones are scaled by 1/(1-rate).

use std::cell::RefCell;

use candle_core::{DType, Device, Result, Tensor};

use crate::init::InitRng;

thread_local! {
    /// The generator of the drop-path masks. candle's CPU generator cannot be seeded, so masks
    /// come from this seeded host generator instead: a training step is then a pure function of
    /// the seed set by [`seed_stochastic_layers`], and a resumed run repeats the masks exactly.
    static MASK_RNG: RefCell<InitRng> = RefCell::new(InitRng::new(0));
}

/// Seeds the random masks of stochastic layers (drop path) on this thread. The training engine
/// calls it before every step with a value derived from the run's seed and the global step.
pub fn seed_stochastic_layers(seed: u64) {
    MASK_RNG.with(|rng| *rng.borrow_mut() = InitRng::new(seed));
}

/// Applies drop path to a residual branch output `x` (first dim = batch). Identity in eval mode
/// or when `rate` is 0.
pub fn drop_path(x: &Tensor, rate: f64, train: bool) -> Result<Tensor> {
    if train && rate >= 1.0 {
        return x.zeros_like();
    }
    let Some(scale) = drop_path_scale(x.dim(0)?, rate, train, x.device())? else {
        return Ok(x.clone());
    };
    maxsup_ops::scale_per_sample(x, &scale)
}

/// The per-sample factors drop path multiplies a residual branch by, `[batch]` f32 (0 or
/// 1 / (1 - rate)), drawn from the same generator and in the same order as [`drop_path`]; `None`
/// where drop path is the identity (eval mode, rate 0). For ops that take the scale as an input
/// (`maxsup_ops::residual_mlp`).
pub fn drop_path_scale(
    batch: usize,
    rate: f64,
    train: bool,
    device: &Device,
) -> Result<Option<Tensor>> {
    if !train || rate <= 0.0 {
        return Ok(None);
    }
    if rate >= 1.0 {
        return Tensor::zeros(batch, DType::F32, device).map(Some);
    }
    let keep = 1.0 - rate;
    // Each sample is kept with probability `keep` and then scaled by 1 / keep.
    let scale: Vec<f32> = MASK_RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        (0..batch)
            .map(|_| {
                if rng.uniform() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect()
    });
    Tensor::from_vec(scale, batch, device).map(Some)
}

/// timm's per-block rates: `linspace(0, max_rate, depth)`.
pub fn linear_drop_path_rates(max_rate: f64, depth: usize) -> Vec<f64> {
    match depth {
        0 => vec![],
        1 => vec![0.0],
        _ => (0..depth)
            .map(|i| max_rate * i as f64 / (depth - 1) as f64)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rates_are_linear_from_zero() {
        assert_eq!(linear_drop_path_rates(0.1, 3), vec![0.0, 0.05, 0.1]);
        assert_eq!(linear_drop_path_rates(0.3, 1), vec![0.0]);
    }

    #[test]
    fn samples_are_dropped_or_rescaled_whole() -> Result<()> {
        let x = Tensor::ones((64, 3, 5), candle_core::DType::F32, &Device::Cpu)?;
        let y = drop_path(&x, 0.5, true)?;
        let per_sample = y.flatten_from(1)?.to_vec2::<f32>()?;
        let mut kept = 0;
        for row in per_sample {
            let v = row[0];
            assert!(
                row.iter().all(|&r| r == v),
                "a sample was partially dropped"
            );
            assert!(v == 0.0 || (v - 2.0).abs() < 1e-6, "value {v}");
            kept += (v != 0.0) as usize;
        }
        assert!(kept > 10 && kept < 54, "kept {kept} of 64 at rate 0.5");
        let eval = drop_path(&x, 0.5, false)?;
        assert_eq!(eval.sum_all()?.to_scalar::<f32>()?, 64.0 * 15.0);
        Ok(())
    }

    fn mask(seed: u64) -> Vec<f32> {
        seed_stochastic_layers(seed);
        let x = Tensor::ones((64, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        drop_path(&x, 0.25, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn masks_repeat_for_the_same_seed_and_keep_the_expectation() {
        assert_eq!(mask(7), mask(7));
        assert_ne!(mask(7), mask(8));
        let m = mask(7);
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let kept = m.iter().filter(|&&v| v > 0.0).count();
        assert!((32..=60).contains(&kept), "kept {kept} of 64 at rate 0.25");
    }
}
