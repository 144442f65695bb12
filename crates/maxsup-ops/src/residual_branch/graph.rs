//! The MLP sub-block as one graph node on devices without its fused CPU kernel (CUDA): the
//! forward runs the separate ops (LayerNorm, linear, GELU, linear: their CUDA kernels and
//! cuBLAS GEMMs) on detached inputs, and one node carries the result, so candle's backward has
//! a single activation edge (`x`) where the composed graph has seven, each costing a zero-fill
//! and an add of an activation-sized gradient (four of them MLP-wide). Its backward applies the
//! ops' backward steps by hand, on the device: GEMMs for the linear layers, the GELU and
//! LayerNorm backward kernels, and the residual gradient added to `dx`.

use super::BranchWeights;
use crate::gelu::gelu_erf_backward;
use crate::layer_norm::layer_norm_backward;
use crate::{gelu_erf, layer_norm, linear};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

/// Operands `(x, [norm weight | norm bias] (f32), [fc1 weight | fc1 bias | fc2 weight | fc2
/// bias] (the activations' dtype))`: two packed vectors because the norm's parameters stay f32
/// next to bf16 linear weights under mixed precision.
struct MlpGraphOp {
    dim: usize,
    hidden: usize,
    eps: f32,
    /// `[B, 1, ...]` in the activations' dtype (stochastic depth), or none.
    scale: Option<Tensor>,
    /// The forward's result, handed to candle once (the node's output) and then dropped.
    output: Mutex<Option<Tensor>>,
    /// LayerNorm's output, fc1's output (GELU's input) and GELU's output (fc2's input).
    saved: (Tensor, Tensor, Tensor),
}

impl MlpGraphOp {
    /// The forward's result, once (a copy of its storage: candle's ops return owned storage).
    fn take_output(&self) -> Result<Tensor> {
        let mut slot = self
            .output
            .lock()
            .map_err(|_| candle_core::Error::Msg("residual_mlp: output lock poisoned".into()))?;
        slot.take().ok_or_else(|| {
            candle_core::Error::Msg("residual_mlp: the graph node ran its forward twice".into())
        })
    }
}

/// `t`'s storage and layout, checked to be the whole buffer in order (so a storage copy is the
/// tensor).
fn whole<R>(t: &Tensor, f: impl FnOnce(&Storage, &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    if layout.contiguous_offsets() != Some((0, t.elem_count())) {
        candle_core::bail!("residual_mlp: the saved output is not a whole contiguous buffer");
    }
    f(&storage, layout)
}

impl CustomOp3 for MlpGraphOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-mlp-graph"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self.take_output()?;
        whole(&y, |s, l| match s {
            Storage::Cpu(s) => Ok((s.try_clone(l)?, y.shape().clone())),
            _ => candle_core::bail!("residual_mlp: the output is not on the CPU"),
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = self.take_output()?;
        whole(&y, |s, l| match s {
            Storage::Cuda(s) => Ok((s.try_clone(l)?, y.shape().clone())),
            _ => candle_core::bail!("residual_mlp: the output is not on the CUDA device"),
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        norm: &Tensor,
        lin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (c, hid) = (self.dim, self.hidden);
        let (x, norm, lin) = (x.detach(), norm.detach(), lin.detach());
        let w1 = lin.narrow(0, 0, hid * c)?.reshape((hid, c))?;
        let w2 = lin.narrow(0, hid * c + hid, c * hid)?.reshape((c, hid))?;
        let (gamma, beta) = (norm.narrow(0, 0, c)?, norm.narrow(0, c, c)?);
        let (l, h, a) = &self.saved;
        let rows = x.elem_count() / c;
        let dy = dy.contiguous()?;
        // fc2's output gradient, then fc2's backward.
        let g = match &self.scale {
            Some(s) => dy.broadcast_mul(s)?,
            None => dy.clone(),
        };
        let g2 = g.reshape((rows, c))?;
        let da = g2.matmul(&w2)?;
        let dw2 = g2.t()?.matmul(&a.reshape((rows, hid))?)?;
        let db2 = column_sum(&g2)?;
        // GELU, then fc1.
        let dh = gelu_erf_backward(&h.reshape((rows, hid))?, &da)?;
        let dl = dh.matmul(&w1)?;
        let dw1 = dh.t()?.matmul(&l.reshape((rows, c))?)?;
        let db1 = column_sum(&dh)?;
        // LayerNorm, and the residual path.
        let (dx_norm, dgamma, dbeta) =
            layer_norm_backward(&x, &gamma, &beta, &dl.reshape(x.shape())?, self.eps)?;
        let dx = (dy + dx_norm)?;
        let dnorm = Tensor::cat(&[dgamma.flatten_all()?, dbeta.flatten_all()?], 0)?;
        let dlin = Tensor::cat(&[dw1.flatten_all()?, db1, dw2.flatten_all()?, db2], 0)?;
        Ok((Some(dx), Some(dnorm), Some(dlin)))
    }
}

/// Column sums of a `[rows, n]` matrix, accumulated in f32 and returned in its dtype (bias
/// gradients over all B·N tokens).
fn column_sum(m: &Tensor) -> Result<Tensor> {
    m.to_dtype(DType::F32)?.sum(0)?.to_dtype(m.dtype())
}

/// Whether the graph node applies: activations and linear parameters of one dtype, f32 norm
/// parameters, on a device with the LayerNorm and GELU kernels (`dispatch::fused`).
pub(super) fn applies(x: &Tensor, w: &BranchWeights) -> bool {
    crate::dispatch::fused(
        &[x, w.in_weight, w.in_bias, w.out_weight, w.out_bias],
        &[w.norm_weight, w.norm_bias],
    ) && x.rank() >= 2
}

/// `x + s ⊙ fc2(gelu(fc1(layer_norm(x))))` as one graph node; `scale` is `[batch]` or none,
/// shapes already checked by the caller.
pub(super) fn residual_mlp(
    x: &Tensor,
    w: &BranchWeights,
    scale: Option<&Tensor>,
) -> Result<Tensor> {
    let (dim, hidden) = (x.dim(candle_core::D::Minus1)?, w.in_weight.dim(0)?);
    let detach = |t: &Tensor| t.detach();
    let xd = x.contiguous()?.detach();
    let l = layer_norm(
        &xd,
        &detach(w.norm_weight),
        &detach(w.norm_bias),
        w.norm_eps,
    )?;
    let h = linear(&l, &detach(w.in_weight), Some(&detach(w.in_bias)))?;
    let a = gelu_erf(&h)?;
    let o = linear(&a, &detach(w.out_weight), Some(&detach(w.out_bias)))?;
    let scale = match scale {
        Some(s) => {
            let mut shape = vec![1usize; o.rank()];
            shape[0] = s.elem_count();
            Some(s.detach().to_dtype(o.dtype())?.reshape(shape)?)
        }
        None => None,
    };
    let o = match &scale {
        Some(s) => o.broadcast_mul(s)?,
        None => o,
    };
    let y = (&xd + o)?;
    let norm = Tensor::cat(
        &[w.norm_weight.flatten_all()?, w.norm_bias.flatten_all()?],
        0,
    )?;
    let lin = Tensor::cat(
        &[
            w.in_weight.flatten_all()?,
            w.in_bias.flatten_all()?,
            w.out_weight.flatten_all()?,
            w.out_bias.flatten_all()?,
        ],
        0,
    )?;
    let op = MlpGraphOp {
        dim,
        hidden,
        eps: w.norm_eps as f32,
        scale,
        output: Mutex::new(Some(y)),
        saved: (l, h, a),
    };
    x.contiguous()?.apply_op3(&norm, &lin, op)
}
