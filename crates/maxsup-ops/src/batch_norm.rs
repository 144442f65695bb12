//! BatchNorm2d (NCHW) for training and evaluation, with PyTorch's running-statistics rule:
//! `running = (1 - momentum) * running + momentum * batch_stat`, the running variance using the
//! unbiased batch variance, normalisation using the biased one.
//!
//! In train mode on f32 CPU, statistics, normalisation and the backward
//! `dx = w * rstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))` are each one fused pass,
//! instead of the ~10 elementwise/reduction nodes of the composed version.

use crate::cpu::slices::{contiguous_f32, is_cpu_f32, output_buffer, tensor_from_vec, with_f32};
use crate::reference;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;

/// Normalisation with fixed per-channel batch statistics (computed before the op is built),
/// optionally followed by ReLU in the same pass.
struct BatchNormTrainOp {
    mean: Vec<f32>,
    rstd: Vec<f32>,
    /// `max(bn(x), 0)`: saves a pass over the activation each way, and one gradient tensor that
    /// candle's backward would zero-fill and add into.
    relu: bool,
}

/// Per-channel mean and biased variance over N, H, W of an NCHW buffer (f64 accumulation).
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |b| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw]);
            let m = (n * hw) as f64;
            let mean = planes()
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>()
                / m;
            let var = planes()
                .map(|p| {
                    p.iter()
                        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .collect()
}

impl CustomOp3 for BatchNormTrainOp {
    fn name(&self) -> &'static str {
        "maxsup-batch-norm2d-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = xl.shape().dims4()?;
        let x = contiguous_f32(xs, xl, "batch_norm2d input")?;
        let wt = contiguous_f32(ws, wl, "batch_norm2d weight")?;
        let bi = contiguous_f32(bs, bl, "batch_norm2d bias")?;
        let hw = h * w;
        let mut y = output_buffer(x.len());
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(pl, (yp, xp))| {
                let ch = pl % c;
                let scale = wt[ch] * self.rstd[ch];
                let shift = bi[ch] - self.mean[ch] * scale;
                if self.relu {
                    yp.iter_mut()
                        .zip(xp)
                        .for_each(|(o, &v)| *o = (v * scale + shift).max(0.0));
                } else {
                    yp.iter_mut()
                        .zip(xp)
                        .for_each(|(o, &v)| *o = v * scale + shift);
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // With the fused ReLU, the gradient reaching the normalisation is dy where y > 0.
        let dy = if self.relu {
            &crate::relu::relu_backward(y, dy)?
        } else {
            dy
        };
        let (n, c, h, wd) = x.dims4()?;
        let hw = h * wd;
        let m = (n * hw) as f32;
        let (dx, dw, db) = with_f32(x, |xv| {
            with_f32(w, |wv| {
                with_f32(dy, |gv| {
                    // Per channel: sum(dy) and sum(dy * xhat).
                    let sums: Vec<(f32, f32)> = (0..c)
                        .into_par_iter()
                        .map(|ch| {
                            let (mut s, mut sx) = (0f64, 0f64);
                            for bb in 0..n {
                                let r = (bb * c + ch) * hw..(bb * c + ch + 1) * hw;
                                let (mean, rstd) = (self.mean[ch], self.rstd[ch]);
                                let (mut a, mut ax) = (0f32, 0f32);
                                for (&g, &v) in gv[r.clone()].iter().zip(&xv[r]) {
                                    a += g;
                                    ax += g * (v - mean) * rstd;
                                }
                                s += a as f64;
                                sx += ax as f64;
                            }
                            (s as f32, sx as f32)
                        })
                        .collect();
                    let mut dx = output_buffer(xv.len());
                    dx.par_chunks_mut(hw).enumerate().for_each(|(pl, dp)| {
                        let ch = pl % c;
                        let (mean, rstd) = (self.mean[ch], self.rstd[ch]);
                        let (s, sx) = sums[ch];
                        let k = wv[ch] * rstd / m;
                        let r = pl * hw..(pl + 1) * hw;
                        for ((o, &g), &v) in dp.iter_mut().zip(&gv[r.clone()]).zip(&xv[r]) {
                            *o = k * (m * g - s - (v - mean) * rstd * sx);
                        }
                    });
                    let dw: Vec<f32> = sums.iter().map(|s| s.1).collect();
                    let db: Vec<f32> = sums.iter().map(|s| s.0).collect();
                    Ok((dx, dw, db))
                })
            })
        })?;
        Ok((
            Some(tensor_from_vec(dx, x.shape())?),
            Some(tensor_from_vec(dw, w.shape())?),
            Some(tensor_from_vec(db, b.shape())?),
        ))
    }
}

/// Checks that every per-channel tensor has `c` elements, naming the offender.
fn check_channels(c: usize, named: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in named {
        if t.elem_count() != c {
            candle_core::bail!(
                "batch_norm2d: {name} has shape {:?}, expected [{c}] (input channels)",
                t.shape()
            );
        }
    }
    Ok(())
}

/// BatchNorm over an NCHW tensor with affine `weight`/`bias` ([C]) and running statistics held
/// in `Var`s (so they live in the model's `VarMap` as `running_mean` / `running_var` and are
/// saved with it).
///
/// `train == true`: normalise with the batch statistics (biased variance) and update the running
/// statistics in place with `momentum` (PyTorch's convention, usually 0.1; unbiased variance).
/// `train == false`: normalise with the running statistics; nothing is updated.
/// f32 on CPU runs a fused custom op in train mode; other dtypes/devices the composed reference
/// (`reference::batch_norm2d`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Var,
    running_var: &Var,
    train: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    batch_norm2d_impl(
        x,
        weight,
        bias,
        (running_mean, running_var),
        train,
        momentum,
        eps,
        false,
    )
}

/// `relu(batch_norm2d(..))` as one op in train mode on f32 CPU (the ResNet conv-BN-ReLU pattern):
/// one pass forward and one fewer activation-sized gradient in backward. Same arguments and
/// results as [`batch_norm2d`] followed by [`crate::relu`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Var,
    running_var: &Var,
    train: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    batch_norm2d_impl(
        x,
        weight,
        bias,
        (running_mean, running_var),
        train,
        momentum,
        eps,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn batch_norm2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (running_mean, running_var): (&Var, &Var),
    train: bool,
    momentum: f64,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    check_channels(
        c,
        &[
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let fast = is_cpu_f32(&[
        x,
        weight,
        bias,
        running_mean.as_tensor(),
        running_var.as_tensor(),
    ]);
    if !train || !fast {
        let y = reference::batch_norm2d(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            train,
            momentum,
            eps,
        )?;
        return if relu { crate::relu(&y) } else { Ok(y) };
    }
    let cnt = n * h * w;
    if cnt < 2 {
        candle_core::bail!(
            "batch_norm2d: train mode needs more than one value per channel, got input {:?}",
            x.shape()
        );
    }
    let x = x.contiguous()?;
    let stats = with_f32(&x, |xv| Ok(channel_stats(xv, n, c, h * w)))?;
    let unbias = cnt as f64 / (cnt - 1) as f64;
    let rm = running_mean.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let rv = running_var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let new_rm: Vec<f32> = rm
        .iter()
        .zip(&stats)
        .map(|(&r, s)| ((1.0 - momentum) * r as f64 + momentum * s.0) as f32)
        .collect();
    let new_rv: Vec<f32> = rv
        .iter()
        .zip(&stats)
        .map(|(&r, s)| ((1.0 - momentum) * r as f64 + momentum * s.1 * unbias) as f32)
        .collect();
    running_mean.set(&tensor_from_vec(new_rm, running_mean.shape())?)?;
    running_var.set(&tensor_from_vec(new_rv, running_var.shape())?)?;
    let op = BatchNormTrainOp {
        mean: stats.iter().map(|s| s.0 as f32).collect(),
        rstd: stats
            .iter()
            .map(|s| (1.0 / (s.1 + eps).sqrt()) as f32)
            .collect(),
        relu,
    };
    x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}
