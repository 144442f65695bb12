//! The losses that are cross entropy plus terms computable from the same per-row statistics:
//! CE, label smoothing, MaxSup and the logit penalty. One entry point validates the input, runs
//! the fused CPU kernel when it applies and the composed candle ops otherwise.

use candle_core::{Result, Tensor, D};

use crate::cross_entropy::per_sample_ce;
use crate::fused::{try_fused, Terms};
use crate::log_softmax::log_softmax;
use crate::maxsup::per_sample_gap;
use crate::validate::{class_index_values, finite_loss, index_tensor, logits_2d};

/// The batch mean of the per-sample loss described by `terms` (see [`Terms`]).
pub(crate) fn softmax_family_loss(
    logits: &Tensor,
    targets: &Tensor,
    terms: Terms,
    what: &str,
) -> Result<Tensor> {
    let (b, k, z) = logits_2d(logits, what)?;
    let y = class_index_values(targets, b, k, what)?;
    let loss = match try_fused(&z, &y, terms)? {
        Some(loss) => loss,
        None => composed(&z, &index_tensor(&y, z.device())?, terms)?,
    };
    finite_loss(loss, logits, what)
}

/// The same loss from candle ops: runs on every device and dtype, and is the kernel's oracle.
pub(crate) fn composed(z: &Tensor, idx: &Tensor, terms: Terms) -> Result<Tensor> {
    let log_probs = log_softmax(z)?;
    let mut per_sample = (per_sample_ce(&log_probs, idx)? * terms.ce)?;
    if terms.uniform != 0.0 {
        per_sample = (per_sample + (log_probs.mean(D::Minus1)?.neg()? * terms.uniform)?)?;
    }
    if terms.maxsup != 0.0 {
        per_sample = (per_sample + (per_sample_gap(z)? * terms.maxsup)?)?;
    }
    if terms.lp != 0.0 {
        per_sample = (per_sample + (z.sqr()?.sum(D::Minus1)? * (terms.lp / 2.0))?)?;
    }
    per_sample.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 10.0 - 5.0
            })
            .collect()
    }

    /// The fused kernel and the composed ops agree in value and gradient, including a row with
    /// tied maxima (both send the gradient to the first).
    #[test]
    fn fused_kernel_matches_composed_ops() {
        let (b, k) = (9, 13);
        let mut values = pseudo_random(b * k, 7);
        values[3] = 6.0;
        values[7] = 6.0; // row 0 has a tie for the max
        let y: Vec<u32> = (0..b as u32).map(|i| (i * 5) % k as u32).collect();
        let all = Terms {
            ce: 0.8,
            uniform: 0.2,
            maxsup: 0.15,
            lp: 0.01,
        };
        for terms in [
            all,
            Terms {
                ce: 1.0,
                maxsup: 0.1,
                ..Terms::default()
            },
        ] {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let t = Tensor::from_vec(values.clone(), (b, k), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let z = Var::from_tensor(&t).unwrap();
                let fused = try_fused(z.as_tensor(), &y, terms).unwrap().unwrap();
                let idx = index_tensor(&y, &Device::Cpu).unwrap();
                let reference = composed(z.as_tensor(), &idx, terms).unwrap();
                let scalar =
                    |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                assert!(
                    (scalar(&fused) - scalar(&reference)).abs()
                        < tol * scalar(&reference).abs().max(1.0)
                );
                let g1 = fused
                    .backward()
                    .unwrap()
                    .get(z.as_tensor())
                    .unwrap()
                    .clone();
                let g2 = reference
                    .backward()
                    .unwrap()
                    .get(z.as_tensor())
                    .unwrap()
                    .clone();
                let diff = (g1 - g2).unwrap().abs().unwrap().max_all().unwrap();
                assert!(scalar(&diff) < tol, "{dtype:?}: gradient differs by {diff}");
            }
        }
    }
}
