//! Reference implementations composed from differentiable candle ops.

use candle_core::{Result, Tensor, D};

/// 2-D convolution, NCHW input, OIHW weight, optional bias of shape [O].
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let y = x.conv2d(weight, padding, stride, dilation, groups)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// Max-pool over NCHW with a square `kernel`, `stride` and zero-free `padding` (padded cells
/// never win), with a backward pass for any kernel/stride combination (candle's own only
/// differentiates kernel == stride). The gradient goes to the first maximal element.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let oh = (h + 2 * padding - kernel) / stride + 1;
    let ow = (w + 2 * padding - kernel) / stride + 1;
    let xp = if padding > 0 {
        let neg = f32::MIN as f64;
        let pad_h = Tensor::full(neg, (n, c, padding, w), x.device())?.to_dtype(x.dtype())?;
        let t = Tensor::cat(&[&pad_h, x, &pad_h], 2)?;
        let pad_w =
            Tensor::full(neg, (n, c, h + 2 * padding, padding), x.device())?.to_dtype(x.dtype())?;
        Tensor::cat(&[&pad_w, &t, &pad_w], 3)?
    } else {
        x.clone()
    };
    let mut out: Option<Tensor> = None;
    for dy in 0..kernel {
        for dx in 0..kernel {
            // rows dy, dy+stride, ..., (oh-1)*stride+dy
            let rows = xp.narrow(2, dy, (oh - 1) * stride + 1)?;
            let win = rows.narrow(3, dx, (ow - 1) * stride + 1)?;
            let win = subsample(&win, stride, oh, ow)?;
            out = Some(match out {
                None => win,
                Some(o) => o.maximum(&win)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("max_pool2d: kernel must be >= 1".into()))
}

/// Pick every `stride`-th row and column of a [N, C, (oh-1)*s+1, (ow-1)*s+1] window.
fn subsample(t: &Tensor, stride: usize, oh: usize, ow: usize) -> Result<Tensor> {
    if stride == 1 {
        return t.contiguous();
    }
    let (n, c, h, w) = t.dims4()?;
    // pad to a multiple of stride so it can be reshaped, then take index 0 of each group.
    let ph = oh * stride - h;
    let pw = ow * stride - w;
    let t = t.pad_with_zeros(2, 0, ph)?.pad_with_zeros(3, 0, pw)?;
    t.reshape((n, c, oh, stride, ow, stride))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, oh, ow))
}

/// LayerNorm over the last dimension with affine weight and bias (both shape [D]).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dimension, differentiable (candle's `softmax_last_dim` is not).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// BatchNorm over NCHW composed from differentiable ops (see `crate::batch_norm2d` for the
/// contract). Train mode normalises with the biased batch variance and updates the running
/// statistics with the unbiased one, like PyTorch.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &candle_core::Var,
    running_var: &candle_core::Var,
    train: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let shape = (1, c, 1, 1);
    let (mean, var) = if train {
        let cnt = n * h * w;
        if cnt < 2 {
            candle_core::bail!(
                "batch_norm2d: train mode needs more than one value per channel, got input {:?}",
                x.shape()
            );
        }
        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let var = x
            .broadcast_sub(&mean)?
            .sqr()?
            .mean_keepdim(0)?
            .mean_keepdim(2)?
            .mean_keepdim(3)?;
        let stat_dtype = running_mean.dtype();
        let (m, v) = (
            mean.detach().flatten_all()?.to_dtype(stat_dtype)?,
            var.detach().flatten_all()?.to_dtype(stat_dtype)?,
        );
        let unbiased = (v * (cnt as f64 / (cnt - 1) as f64))?;
        let rm = ((running_mean.as_tensor().detach() * (1.0 - momentum))?
            + (m.reshape(running_mean.shape())? * momentum)?)?;
        let rv = ((running_var.as_tensor().detach() * (1.0 - momentum))?
            + (unbiased.reshape(running_var.shape())? * momentum)?)?;
        running_mean.set(&rm.to_dtype(running_mean.dtype())?)?;
        running_var.set(&rv.to_dtype(running_var.dtype())?)?;
        (mean, var)
    } else {
        (
            running_mean
                .as_tensor()
                .detach()
                .reshape(shape)?
                .to_dtype(x.dtype())?,
            running_var
                .as_tensor()
                .detach()
                .reshape(shape)?
                .to_dtype(x.dtype())?,
        )
    };
    let xn = x
        .broadcast_sub(&mean)?
        .broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(&weight.reshape(shape)?)?
        .broadcast_add(&bias.reshape(shape)?)
}

/// `x @ weight^T + bias` over the last dimension of `x` (any rank), composed from candle ops.
/// Leading dimensions are flattened into one GEMM: candle's `Linear` on a 3-D input instead runs
/// one small, separately packed GEMM per batch element, forward and backward.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if x.rank() == 0 {
        candle_core::bail!("linear: input must have at least one dimension");
    }
    let dims = x.dims().to_vec();
    let (din, dout) = (dims[dims.len() - 1], weight.dim(0)?);
    let x2 = x.reshape(((), din))?;
    let y = x2.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    *out.last_mut().expect("non-empty dims") = dout;
    y.reshape(out)
}
