//! A fused CPU kernel for the softmax-family losses (CE, LS, MaxSup, logit penalty).
//!
//! Composed from candle ops, MaxSup adds an argmax, a gather, a mean and their backward passes to
//! cross entropy: several extra sweeps over the `[B, K]` logits. Everything these losses need
//! per row (max, argmax, log-sum-exp, sum, sum of squares) comes out of the same two passes, so
//! one kernel computes all of them and MaxSup costs what CE costs. With the `cuda` feature the
//! same op carries maxsup-ops' CUDA kernels (f32 logits). The composed versions remain the
//! implementation on other devices and dtypes and are the oracle in the tests.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Weights of the terms of the per-sample loss
/// `ce * (-log p_y) + uniform * (-mean_k log p_k) + maxsup * (z_max - mean_k z_k) + lp/2 * sum_k z_k^2`
/// (maxsup-ops' type, which its CUDA kernels take as an argument).
pub(crate) use maxsup_ops::softmax_loss::LossTerms as Terms;

/// The batch-mean loss on `z` (`[B, K]`, compute dtype) with host-side `targets`, through the
/// fused kernel when `z` is on the CPU in f32/f64 or (feature `cuda`) on CUDA in f32; `None`
/// otherwise (the caller composes).
pub(crate) fn try_fused(z: &Tensor, targets: &[u32], terms: Terms) -> Result<Option<Tensor>> {
    let cpu = z.device().is_cpu() && matches!(z.dtype(), DType::F32 | DType::F64);
    let cuda = cfg!(feature = "cuda") && z.device().is_cuda() && z.dtype() == DType::F32;
    if !(cpu || cuda) {
        return Ok(None);
    }
    let op = FusedLoss {
        targets: targets.to_vec(),
        terms,
    };
    Ok(Some(z.contiguous()?.apply_op1(op)?))
}

struct FusedLoss {
    targets: Vec<u32>,
    terms: Terms,
}

/// Per-row statistics of the logits, from one pass plus the exp pass.
struct RowStats {
    max: f64,
    argmax: usize,
    log_sum_exp: f64,
    mean: f64,
    sum_sq: f64,
}

fn row_stats<T: WithDType>(row: &[T]) -> RowStats {
    let (mut max, mut argmax, mut sum, mut sum_sq) = (row[0].to_f64(), 0, 0.0, 0.0);
    for (k, v) in row.iter().enumerate() {
        let v = v.to_f64();
        if v > max {
            (max, argmax) = (v, k);
        }
        sum += v;
        sum_sq += v * v;
    }
    let sum_exp: f64 = row.iter().map(|v| (v.to_f64() - max).exp()).sum();
    RowStats {
        max,
        argmax,
        log_sum_exp: max + sum_exp.ln(),
        mean: sum / row.len() as f64,
        sum_sq,
    }
}

fn rows<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<(&'a [T], usize, usize)> {
    let (b, k) = layout.shape().dims2()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused loss: logits must be contiguous");
    };
    Ok((&T::cpu_storage_as_slice(storage)?[start..end], b, k))
}

impl FusedLoss {
    fn forward<T: WithDType>(&self, storage: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
        let (data, b, k) = rows::<T>(storage, layout)?;
        let t = self.terms;
        let total: f64 = data
            .par_chunks(k)
            .zip(self.targets.par_iter())
            .map(|(row, &y)| {
                let s = row_stats(row);
                let log_p_y = row[y as usize].to_f64() - s.log_sum_exp;
                let mean_log_p = s.mean - s.log_sum_exp;
                -t.ce * log_p_y - t.uniform * mean_log_p
                    + t.maxsup * (s.max - s.mean)
                    + t.lp * 0.5 * s.sum_sq
            })
            .sum();
        Ok(T::to_cpu_storage(&[T::from_f64(total / b as f64)]))
    }

    fn gradient<T: WithDType>(&self, storage: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
        let (data, b, k) = rows::<T>(storage, layout)?;
        let t = self.terms;
        let (inv_b, inv_k) = (1.0 / b as f64, 1.0 / k as f64);
        let mut grad = vec![T::from_f64(0.0); b * k];
        grad.par_chunks_mut(k)
            .zip(data.par_chunks(k))
            .zip(self.targets.par_iter())
            .for_each(|((g, row), &y)| {
                let s = row_stats(row);
                for (j, (gj, zj)) in g.iter_mut().zip(row).enumerate() {
                    let z = zj.to_f64();
                    let p = (z - s.log_sum_exp).exp();
                    let onehot_y = if j == y as usize { 1.0 } else { 0.0 };
                    let onehot_max = if j == s.argmax { 1.0 } else { 0.0 };
                    let d = t.ce * (p - onehot_y)
                        + t.uniform * (p - inv_k)
                        + t.maxsup * (onehot_max - inv_k)
                        + t.lp * z;
                    *gj = T::from_f64(d * inv_b);
                }
            });
        Ok(T::to_cpu_storage_owned(grad))
    }
}

impl CustomOp1 for FusedLoss {
    fn name(&self) -> &'static str {
        "maxsup-fused-loss"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(_) => self.forward::<f32>(storage, layout)?,
            CpuStorage::F64(_) => self.forward::<f64>(storage, layout)?,
            _ => candle_core::bail!("fused loss: logits must be f32 or f64"),
        };
        Ok((out, Shape::from(())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = maxsup_ops::softmax_loss::softmax_loss_forward(
            storage,
            layout,
            &self.targets,
            self.terms,
        )?;
        Ok((out, Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = FusedLossGradient(FusedLoss {
            targets: self.targets.clone(),
            terms: self.terms,
        });
        let grad = arg.apply_op1_no_bwd(&op)?;
        Ok(Some(grad.broadcast_mul(grad_res)?))
    }
}

/// The gradient of [`FusedLoss`] w.r.t. the logits, `[B, K]`, for an upstream gradient of 1.
struct FusedLossGradient(FusedLoss);

impl CustomOp1 for FusedLossGradient {
    fn name(&self) -> &'static str {
        "maxsup-fused-loss-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let fused = &self.0;
        let out = match storage {
            CpuStorage::F32(_) => fused.gradient::<f32>(storage, layout)?,
            CpuStorage::F64(_) => fused.gradient::<f64>(storage, layout)?,
            _ => candle_core::bail!("fused loss gradient: logits must be f32 or f64"),
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let fused = &self.0;
        let out = maxsup_ops::softmax_loss::softmax_loss_gradient(
            storage,
            layout,
            &fused.targets,
            fused.terms,
        )?;
        Ok((out, layout.shape().clone()))
    }
}
