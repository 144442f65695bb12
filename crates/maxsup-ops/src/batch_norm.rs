//! BatchNorm2d (NCHW) for training and evaluation, with PyTorch's running-statistics rule:
//! `running = (1 - momentum) * running + momentum * batch_stat`, the running variance using the
//! unbiased batch variance, normalisation using the biased one.
//!
//! In train mode the fused path is three ops, each with a CPU and a CUDA kernel: the batch
//! statistics (f32 results of an f64 reduction), the normalisation (+ReLU) and, in backward, the
//! per-channel sums then `dx = w * rstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))`. The
//! input may be bf16 on CUDA; weight, bias, statistics and their gradients stay f32. The running
//! statistics are updated with tensor ops on the statistics' device, in [`batch_norm2d`] itself.

mod add_relu;
mod in_graph;
pub use add_relu::batch_norm2d_add_relu;
pub(crate) use in_graph::{NormInGraph, NormTail};

use crate::cpu::batch_norm_images as images;
use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::{ensure_len, Output};
use crate::dispatch::fused;
use crate::reference;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, Var,
};
use rayon::prelude::*;

/// Per-channel mean and biased variance over N, H, W of an NCHW buffer (f64 accumulation).
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    if hw < images::FEW_PIXELS {
        return images::channel_stats(x, n, c, hw);
    }
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |b| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw]);
            let m = (n * hw) as f64;
            let mean = planes().map(crate::cpu::lanes::sum_f64).sum::<f64>() / m;
            let var = planes()
                .map(|p| crate::cpu::lanes::sq_dev_sum_f64(p, mean))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .collect()
}

/// `1 / sqrt(var + eps)`, in f64 then rounded (the CPU kernels' per-channel scale).
fn rstd(var: f32, eps: f64) -> f32 {
    (1.0 / (var as f64 + eps).sqrt()) as f32
}

/// The f32 values of a small CPU tensor (per-channel statistics captured by an op).
fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Per channel `(mean, rstd)` on the host from captured `[mean | var]` statistics (CPU kernels).
fn host_mean_rstd(stats: &Tensor, eps: f64, c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let st = host_f32(stats)?;
    ensure_len("batch_norm2d statistics", st.len(), 2 * c)?;
    let mean = st[..c].to_vec();
    let rstd = st[c..].iter().map(|&v| rstd(v, eps)).collect();
    Ok((mean, rstd))
}

/// `(N, C, H·W)` of the ops' input: `[N, C, H, W]`, or `[N, H, W, C]` when `nhwc`.
fn dims(shape: &Shape, nhwc: bool) -> Result<(usize, usize, usize)> {
    let (a, b, c, d) = shape.dims4()?;
    Ok(match nhwc {
        false => (a, b, c * d),
        true => (a, d, b * c),
    })
}

/// Batch statistics `[mean (C) | biased variance (C)]`, f32, of an NCHW input (NHWC with
/// `nhwc`: every op below takes the `[N, H, W, C]` permutation of a channels-last input then).
struct BatchStatsOp {
    nhwc: bool,
}

impl CustomOp1 for BatchStatsOp {
    fn name(&self) -> &'static str {
        "maxsup-batch-norm2d-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(l.shape(), self.nhwc)?;
        let x = contiguous_f32(s, l, "batch_norm2d input")?;
        let st = match self.nhwc {
            true => crate::cpu::batch_norm_nhwc::channel_stats(x, c),
            false => channel_stats(x, n, c, hw),
        };
        let mut out: Vec<f32> = st.iter().map(|s| s.0 as f32).collect();
        out.extend(st.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from(2 * c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (_, c, _) = dims(l.shape(), self.nhwc)?;
        let st = crate::cuda::batch_norm::stats(s, l, self.nhwc)?;
        Ok((st, Shape::from(2 * c)))
    }
}

/// Borrow of a captured f32 tensor's CUDA storage (statistics, weights) inside a `cuda_fwd`.
#[cfg(feature = "cuda")]
fn with_cuda<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>,
) -> Result<R> {
    crate::cuda::captured::with_cuda(t, &format!("batch_norm2d: {what}"), f)
}

/// What follows the per-channel affine in a CPU normalisation pass.
#[derive(Clone, Copy)]
enum Tail<'a> {
    None,
    Relu,
    /// `max(. + r, 0)`: a ResNet block's shortcut `r` (same layout as `x`) and its ReLU.
    AddRelu(&'a [f32]),
}

/// `(x - mean) * rstd * w + b` per channel, then `tail`, on the CPU in one pass, for an NCHW
/// buffer of `c` channels of `hw` pixels, or an NHWC one with `nhwc`.
fn normalise_cpu(
    x: &[f32],
    (wt, bi): (&[f32], &[f32]),
    (mean, rstd): (&[f32], &[f32]),
    (c, hw): (usize, usize),
    tail: Tail,
    nhwc: bool,
) -> Vec<f32> {
    let scale: Vec<f32> = (0..c).map(|ch| wt[ch] * rstd[ch]).collect();
    let shift: Vec<f32> = (0..c).map(|ch| bi[ch] - mean[ch] * scale[ch]).collect();
    let relu = !matches!(tail, Tail::None);
    if nhwc {
        return match tail {
            Tail::AddRelu(r) => {
                crate::cpu::batch_norm_nhwc::affine_add_relu(x, r, c, &scale, &shift)
            }
            _ => crate::cpu::batch_norm_nhwc::affine(x, c, &scale, &shift, relu),
        };
    }
    let mut y = Output::new(x.len());
    if hw < images::FEW_PIXELS {
        match tail {
            Tail::AddRelu(r) => {
                images::affine_add_relu(y.slots(), x, r, c * hw, hw, &scale, &shift)
            }
            _ => images::affine(y.slots(), x, c * hw, hw, &scale, &shift, relu),
        }
        // SAFETY: the images of `x` (c * hw elements each) cover `y` element for element.
        return unsafe { y.assume_init() };
    }
    match tail {
        Tail::AddRelu(r) => y
            .slots()
            .par_chunks_mut(hw)
            .zip(x.par_chunks(hw).zip(r.par_chunks(hw)))
            .enumerate()
            .for_each(|(pl, (yp, (xp, rp)))| {
                let ch = pl % c;
                crate::cpu::lanes::affine_add_relu(yp, xp, rp, scale[ch], shift[ch]);
            }),
        _ => y
            .slots()
            .par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(pl, (yp, xp))| {
                let ch = pl % c;
                crate::cpu::lanes::affine(yp, xp, scale[ch], shift[ch], relu);
            }),
    }
    // SAFETY: the planes of `x` (length hw each) cover `y` element for element.
    unsafe { y.assume_init() }
}

/// Normalisation with the batch statistics `stats` ([mean | var], computed before the op is
/// built), optionally followed by ReLU in the same pass.
struct BatchNormTrainOp {
    stats: Tensor,
    eps: f64,
    /// `max(bn(x), 0)`: saves a pass over the activation each way, and one gradient tensor that
    /// candle's backward would zero-fill and add into.
    relu: bool,
    /// SyncBatchNorm: `stats` are the whole batch's, and backward sums over the replicas
    /// installed on the thread (ops must be `Send`, so the replicas are not held here).
    synced: bool,
    nhwc: bool,
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
        let (_, c, hw) = dims(xl.shape(), self.nhwc)?;
        let x = contiguous_f32(xs, xl, "batch_norm2d input")?;
        let wt = contiguous_f32(ws, wl, "batch_norm2d weight")?;
        let bi = contiguous_f32(bs, bl, "batch_norm2d bias")?;
        let (mean, rstd) = host_mean_rstd(&self.stats, self.eps, c)?;
        ensure_len("batch_norm2d weight", wt.len(), c)?;
        ensure_len("batch_norm2d bias", bi.len(), c)?;
        let tail = if self.relu { Tail::Relu } else { Tail::None };
        let y = normalise_cpu(x, (wt, bi), (&mean, &rstd), (c, hw), tail, self.nhwc);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = with_cuda(&self.stats, "the statistics", |ss, sl| {
            crate::cuda::batch_norm::apply(
                (xs, xl),
                (ss, sl),
                (ws, wl),
                (bs, bl),
                None,
                self.eps as f32,
                self.relu,
                self.nhwc,
            )
        })?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // With the fused ReLU, the gradient reaching the normalisation is dy where y > 0.
        let g = if self.relu {
            crate::relu::relu_backward(y, dy)?
        } else {
            dy.contiguous()?
        };
        let (dx, dw, db) =
            normalisation_backward(x, w, &g, &self.stats, self.eps, self.synced, self.nhwc)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The gradients of the train-mode normalisation with respect to its input, weight and bias,
/// from the gradient `g` reaching it (dy, masked by a fused ReLU); `synced` averages the
/// per-channel sums over the SyncBatchNorm replicas first.
fn normalisation_backward(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    stats: &Tensor,
    eps: f64,
    synced: bool,
    nhwc: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _) = dims(x.shape(), nhwc)?;
    let sums = x.apply_op2_no_bwd(
        g,
        &BatchNormBackwardSums {
            stats: stats.clone(),
            eps,
            nhwc,
        },
    )?;
    let dx_sums = if synced {
        let Some(r) = crate::sync_batch_norm::active() else {
            candle_core::bail!(
                "batch_norm2d: the backward pass of a synchronised BatchNorm ran without the \
                 replicas installed (keep the sync_batch_norm guard alive through backward)"
            )
        };
        crate::sync_batch_norm::mean_over_replicas(r.as_ref(), &sums)?
    } else {
        sums.clone()
    };
    let dx = x.apply_op3_no_bwd(
        g,
        &dx_sums,
        &BatchNormBackwardDx {
            stats: stats.clone(),
            weight: w.clone(),
            eps,
            nhwc,
        },
    )?;
    let dw = sums.narrow(0, 0, c)?.reshape(w.shape())?;
    let db = sums.narrow(0, c, c)?.reshape(w.shape())?;
    Ok((dx, dw, db))
}

/// `[sum(g * xhat) | sum(g)]` per channel, f32: the weight and bias gradients, from the input
/// and the gradient `g` reaching the normalisation.
struct BatchNormBackwardSums {
    stats: Tensor,
    eps: f64,
    nhwc: bool,
}

impl CustomOp2 for BatchNormBackwardSums {
    fn name(&self) -> &'static str {
        "maxsup-batch-norm2d-backward-sums"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(xl.shape(), self.nhwc)?;
        let xv = contiguous_f32(xs, xl, "batch_norm2d input")?;
        let gv = contiguous_f32(gs, gl, "batch_norm2d gradient")?;
        let (mean, rstd) = host_mean_rstd(&self.stats, self.eps, c)?;
        ensure_len("batch_norm2d gradient", gv.len(), xv.len())?;
        if self.nhwc {
            let out = crate::cpu::batch_norm_nhwc::grad_sums(gv, xv, c, &mean, &rstd);
            return Ok((CpuStorage::F32(out), Shape::from(2 * c)));
        }
        let sums: Vec<(f32, f32)> = if hw < images::FEW_PIXELS {
            images::grad_sums(gv, xv, n, c, hw, &mean, &rstd)
        } else {
            (0..c)
                .into_par_iter()
                .map(|ch| {
                    let (mean, rstd) = (mean[ch], rstd[ch]);
                    let (mut s, mut sx) = (0f64, 0f64);
                    for bb in 0..n {
                        let r = (bb * c + ch) * hw..(bb * c + ch + 1) * hw;
                        let (a, ax) =
                            crate::cpu::lanes::grad_sums(&gv[r.clone()], &xv[r], mean, rstd);
                        s += a as f64;
                        sx += ax as f64;
                    }
                    (s as f32, sx as f32)
                })
                .collect()
        };
        let mut out: Vec<f32> = sums.iter().map(|s| s.1).collect();
        out.extend(sums.iter().map(|s| s.0));
        Ok((CpuStorage::F32(out), Shape::from(2 * c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (_, c, _) = dims(xl.shape(), self.nhwc)?;
        let sums = with_cuda(&self.stats, "the statistics", |ss, sl| {
            crate::cuda::batch_norm::backward_sums(
                (xs, xl),
                (gs, gl),
                (ss, sl),
                self.eps as f32,
                self.nhwc,
            )
        })?;
        Ok((sums, Shape::from(2 * c)))
    }
}

/// `dx` from `(x, g, sums)`: the input gradient of the train-mode normalisation.
struct BatchNormBackwardDx {
    stats: Tensor,
    weight: Tensor,
    eps: f64,
    nhwc: bool,
}

impl CustomOp3 for BatchNormBackwardDx {
    fn name(&self) -> &'static str {
        "maxsup-batch-norm2d-backward-dx"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = dims(xl.shape(), self.nhwc)?;
        let m = (n * hw) as f32;
        let xv = contiguous_f32(xs, xl, "batch_norm2d input")?;
        let gv = contiguous_f32(gs, gl, "batch_norm2d gradient")?;
        let sums = contiguous_f32(ss, sl, "batch_norm2d sums")?;
        let (mean, rstd) = host_mean_rstd(&self.stats, self.eps, c)?;
        let wv = host_f32(&self.weight)?;
        ensure_len("batch_norm2d gradient", gv.len(), xv.len())?;
        ensure_len("batch_norm2d sums", sums.len(), 2 * c)?;
        if self.nhwc {
            let k: Vec<f32> = (0..c).map(|ch| wv[ch] * rstd[ch] / m).collect();
            let terms = crate::cpu::batch_norm_nhwc::ChannelDx {
                k: &k,
                s: &sums[c..],
                sx: &sums[..c],
                mean: &mean,
                rstd: &rstd,
            };
            let dx = crate::cpu::batch_norm_nhwc::dx(gv, xv, c, m, &terms);
            return Ok((CpuStorage::F32(dx), xl.shape().clone()));
        }
        let mut dx = Output::new(xv.len());
        if hw < images::FEW_PIXELS {
            let per_channel = images::ChannelDx {
                k: (0..c).map(|ch| wv[ch] * rstd[ch] / m).collect(),
                s: sums[c..2 * c].to_vec(),
                sx: sums[..c].to_vec(),
                mean,
                rstd,
            };
            images::dx(dx.slots(), gv, xv, c * hw, hw, m, &per_channel);
            // SAFETY: the images of `x` (c * hw elements each) cover `dx` element for element.
            let dx = unsafe { dx.assume_init() };
            return Ok((CpuStorage::F32(dx), xl.shape().clone()));
        }
        dx.slots()
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(pl, dp)| {
                let ch = pl % c;
                let (mean, rstd) = (mean[ch], rstd[ch]);
                let (sx, s) = (sums[ch], sums[c + ch]);
                let k = wv[ch] * rstd / m;
                let r = pl * hw..(pl + 1) * hw;
                crate::cpu::lanes::batch_norm_dx(
                    dp,
                    &gv[r.clone()],
                    &xv[r],
                    k,
                    m,
                    s,
                    sx,
                    mean,
                    rstd,
                );
            });
        // SAFETY: each plane's hw elements were written from equally long input planes.
        let dx = unsafe { dx.assume_init() };
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dx = with_cuda(&self.stats, "the statistics", |ts, tl| {
            with_cuda(&self.weight, "the weight", |ws, wl| {
                crate::cuda::batch_norm::backward_dx(
                    (xs, xl),
                    (gs, gl),
                    (ts, tl),
                    (ws, wl),
                    (ss, sl),
                    self.eps as f32,
                    self.nhwc,
                )
            })
        })?;
        Ok((dx, xl.shape().clone()))
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
/// The fused ops run for f32 on the CPU and for f32 or bf16 input (f32 weight, bias and running
/// statistics) on CUDA; anything else runs the composed reference (`reference::batch_norm2d`).
/// In train mode a channels-last input (`crate::layout`) runs the NHWC kernels and gives a
/// channels-last result.
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
    let stat_params = [
        weight,
        bias,
        running_mean.as_tensor(),
        running_var.as_tensor(),
    ];
    if !fused(&[x], &stat_params) {
        if train && crate::sync_batch_norm::active().is_some() {
            candle_core::bail!(
                "batch_norm2d: SyncBatchNorm runs on the fused kernels (f32 on the CPU, f32 or \
                 bf16 on CUDA, f32 parameters); got a {:?} input with {:?} parameters",
                x.dtype(),
                weight.dtype()
            );
        }
        // The composed reference multiplies in the input's dtype (e.g. f16 activations with
        // f32 parameters in mixed precision on the CPU).
        let (weight, bias) = (&weight.to_dtype(x.dtype())?, &bias.to_dtype(x.dtype())?);
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
    if !train {
        return eval_f32_statistics(x, weight, bias, (running_mean, running_var), eps, relu);
    }
    let (x, stats, synced, nhwc) =
        train_statistics(x, (running_mean, running_var), momentum, n * h * w)?;
    let op = BatchNormTrainOp {
        stats,
        eps,
        relu,
        synced,
        nhwc,
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    match nhwc {
        true => crate::layout::from_nhwc(&y),
        false => Ok(y),
    }
}

/// Train mode's first half: the input as the ops take it (its `[N, H, W, C]` permutation when
/// channels-last, else contiguous NCHW), its batch statistics (over every replica under
/// SyncBatchNorm), whether they are synchronised, whether the layout is NHWC; the running
/// statistics updated. `cnt` = values per channel on this replica.
fn train_statistics(
    x: &Tensor,
    running: (&Var, &Var),
    momentum: f64,
    cnt: usize,
) -> Result<(Tensor, Tensor, bool, bool)> {
    if cnt < 2 {
        candle_core::bail!(
            "batch_norm2d: train mode needs more than one value per channel, got input {:?}",
            x.shape()
        );
    }
    // A channels-last input runs the NHWC kernels on its [N, H, W, C] permutation (contiguous).
    let nhwc = crate::layout::is_channels_last(x);
    let x = match nhwc {
        true => crate::layout::nhwc(x)?,
        false => x.contiguous()?,
    };
    let (stats, synced) = op_layout_statistics(&x, nhwc, running, momentum, cnt)?;
    Ok((x, stats, synced, nhwc))
}

/// The batch statistics of an input already in the ops' layout (over every replica under
/// SyncBatchNorm) and whether they are synchronised; the running statistics updated.
fn op_layout_statistics(
    x: &Tensor,
    nhwc: bool,
    running: (&Var, &Var),
    momentum: f64,
    cnt: usize,
) -> Result<(Tensor, bool)> {
    let local = x.apply_op1_no_bwd(&BatchStatsOp { nhwc })?;
    let replicas = crate::sync_batch_norm::active();
    let (stats, count) = match &replicas {
        Some(r) => (
            crate::sync_batch_norm::global_stats(r.as_ref(), &local)?,
            cnt * r.world_size(),
        ),
        None => (local, cnt),
    };
    update_running_stats(&stats, running, momentum, count)?;
    Ok((stats, replicas.is_some()))
}

/// PyTorch's rule, `running = (1 - momentum) * running + momentum * batch` (the variance
/// unbiased), from the `[mean | var]` statistics of `cnt` values per channel. On a GPU this is a
/// few tensor ops on the device (no host round trip); on the CPU plain host arithmetic in f64
/// (candle's CPU element-wise ops each wake its spinning thread pool, which against rayon's
/// workers cost ~9% of a ResNet-20 step for these dozen-element updates).
fn update_running_stats(
    stats: &Tensor,
    (running_mean, running_var): (&Var, &Var),
    momentum: f64,
    cnt: usize,
) -> Result<()> {
    let c = running_mean.elem_count();
    let unbias = cnt as f64 / (cnt - 1) as f64;
    if stats.device().is_cpu() {
        let st = host_f32(stats)?;
        let update = |running: &Var, batch: &[f32], scale: f64| -> Result<()> {
            let old = host_f32(running.as_tensor())?;
            let new: Vec<f32> = old
                .iter()
                .zip(batch)
                .map(|(&r, &b)| ((1.0 - momentum) * r as f64 + momentum * scale * b as f64) as f32)
                .collect();
            running.set(&Tensor::from_vec(new, running.shape(), running.device())?)
        };
        update(running_mean, &st[..c], 1.0)?;
        return update(running_var, &st[c..], unbias);
    }
    let (mean, var) = (stats.narrow(0, 0, c)?, stats.narrow(0, c, c)?);
    let rm = (running_mean
        .as_tensor()
        .flatten_all()?
        .affine(1.0 - momentum, 0.0)?
        + mean.affine(momentum, 0.0)?)?;
    let rv = (running_var
        .as_tensor()
        .flatten_all()?
        .affine(1.0 - momentum, 0.0)?
        + var.affine(momentum * unbias, 0.0)?)?;
    running_mean.set(&rm.reshape(running_mean.shape())?)?;
    running_var.set(&rv.reshape(running_var.shape())?)
}

/// Eval mode with f32 statistics for any input dtype: `x * scale + shift` per channel, computed
/// in f32 and cast back (candle autograd gives the gradients). f32 inputs keep the reference
/// formula, `(x - mean) / sqrt(var + eps) * w + b`.
fn eval_f32_statistics(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (running_mean, running_var): (&Var, &Var),
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let y = if x.dtype() == DType::F32 {
        reference::batch_norm2d(x, weight, bias, running_mean, running_var, false, 0.0, eps)?
    } else {
        let c = x.dim(1)?;
        let rm = running_mean.as_tensor().detach().flatten_all()?;
        let rstd = (running_var.as_tensor().detach().flatten_all()? + eps)?
            .sqrt()?
            .recip()?;
        let scale = weight.flatten_all()?.mul(&rstd)?;
        let shift = bias.flatten_all()?.sub(&rm.mul(&scale)?)?;
        x.to_dtype(DType::F32)?
            .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?
            .to_dtype(x.dtype())?
    };
    if relu {
        crate::relu(&y)
    } else {
        Ok(y)
    }
}
