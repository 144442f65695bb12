//! `relu(batch_norm2d(x) + residual)`: the last BatchNorm of a ResNet block with its shortcut
//! and ReLU as one op. The normalisation pass adds the residual and clamps (a CUDA kernel, or the
//! CPU's one pass), so the block's BatchNorm output is never written and read back: two
//! activation-sized passes less per block, over the largest activations of a ResNet-50. The
//! backward is the fused BN+ReLU's: the ReLU mask taken from the output is the residual's
//! gradient and the gradient reaching the normalisation.

use super::{dims, host_mean_rstd, normalisation_backward, normalise_cpu, train_statistics, Tail};
use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::ensure_len;
use crate::dispatch::fused;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};

/// Operands `(x, [weight | bias], residual)`: candle's custom ops take at most three, so the
/// two per-channel parameters travel as one `[2C]` tensor (a `cat` whose backward splits the
/// gradient again).
pub(super) struct BatchNormAddReluOp {
    pub(super) stats: Tensor,
    pub(super) eps: f64,
    pub(super) synced: bool,
    pub(super) nhwc: bool,
}

impl CustomOp3 for BatchNormAddReluOp {
    fn name(&self) -> &'static str {
        "maxsup-batch-norm2d-add-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = dims(xl.shape(), self.nhwc)?;
        let x = contiguous_f32(xs, xl, "batch_norm2d_add_relu input")?;
        let p = contiguous_f32(ps, pl, "batch_norm2d_add_relu weight and bias")?;
        let r = contiguous_f32(rs, rl, "batch_norm2d_add_relu residual")?;
        ensure_len("batch_norm2d_add_relu weight and bias", p.len(), 2 * c)?;
        ensure_len("batch_norm2d_add_relu residual", r.len(), x.len())?;
        let (mean, rstd) = host_mean_rstd(&self.stats, self.eps, c)?;
        let tail = Tail::AddRelu(r);
        let y = normalise_cpu(
            x,
            (&p[..c], &p[c..]),
            (&mean, &rstd),
            (c, hw),
            tail,
            self.nhwc,
        );
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ps: &CudaStorage,
        pl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (_, c, _) = dims(xl.shape(), self.nhwc)?;
        if pl.shape().elem_count() != 2 * c {
            candle_core::bail!(
                "batch_norm2d_add_relu: weight and bias hold {} values for {c} channels",
                pl.shape().elem_count()
            );
        }
        let wl = Layout::contiguous_with_offset(c, pl.start_offset());
        let bl = Layout::contiguous_with_offset(c, pl.start_offset() + c);
        let y = super::with_cuda(&self.stats, "the statistics", |ss, sl| {
            crate::cuda::batch_norm::apply(
                (xs, xl),
                (ss, sl),
                (ps, &wl),
                (ps, &bl),
                Some((rs, rl)),
                self.eps as f32,
                true,
                self.nhwc,
            )
        })?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = crate::relu::relu_backward(y, dy)?;
        let c = p.elem_count() / 2;
        let w = p.narrow(0, 0, c)?;
        let (dx, dw, db) =
            normalisation_backward(x, &w, &g, &self.stats, self.eps, self.synced, self.nhwc)?;
        Ok((Some(dx), Some(Tensor::cat(&[dw, db], 0)?), Some(g)))
    }
}

/// `relu(batch_norm2d(x, ..) + residual)` (the end of every ResNet block): one op in train mode
/// (f32 on the CPU, f32 or bf16 activations with f32 parameters on CUDA, `x` and `residual` in
/// the same memory format), else [`crate::batch_norm2d`] then [`crate::add_relu`]. Arguments and
/// running-statistics update as [`crate::batch_norm2d`]; `residual` has `x`'s shape.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_add_relu(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Var,
    running_var: &Var,
    train: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    if residual.shape() != x.shape() {
        candle_core::bail!(
            "batch_norm2d_add_relu: residual {:?} differs from input {:?}",
            residual.shape(),
            x.shape()
        );
    }
    let params = [
        weight,
        bias,
        running_mean.as_tensor(),
        running_var.as_tensor(),
    ];
    let same_format =
        crate::layout::is_channels_last(x) == crate::layout::is_channels_last(residual);
    let (n, c, h, w) = x.dims4()?;
    if !(train && same_format && fused(&[x, residual], &params) && weight.elem_count() == c) {
        let y = crate::batch_norm2d(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            train,
            momentum,
            eps,
        )?;
        return crate::add_relu(&y, residual);
    }
    super::check_channels(
        c,
        &[
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let (x, stats, synced, nhwc) =
        train_statistics(x, (running_mean, running_var), momentum, n * h * w)?;
    let residual = match nhwc {
        true => crate::layout::nhwc(residual)?.contiguous()?,
        false => residual.contiguous()?,
    };
    let wb = Tensor::cat(&[weight.flatten_all()?, bias.flatten_all()?], 0)?;
    let op = BatchNormAddReluOp {
        stats,
        eps,
        synced,
        nhwc,
    };
    let y = x.apply_op3(&wb, &residual, op)?;
    match nhwc {
        true => crate::layout::from_nhwc(&y),
        false => Ok(y),
    }
}
