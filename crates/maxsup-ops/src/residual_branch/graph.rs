//! A transformer sub-block as one graph node on devices without its fused CPU kernel (CUDA):
//! the forward runs the separate ops (LayerNorm, linear, GELU or attention, linear: their CUDA
//! kernels and cuBLAS GEMMs) on detached inputs, and one node carries the result, so candle's
//! backward has a single activation edge (`x`) where the composed graph has seven (MLP) or a
//! dozen (attention, among them the `[B, heads, N, N]` scores), each costing a zero-fill and an
//! add of its gradient. The backward applies the ops' backward steps by hand, on the device:
//! GEMMs for the linear layers and the attention products, the GELU, softmax and LayerNorm
//! backward kernels, and the residual gradient added to `dx`.

use super::{BranchWeights, Inner};
use crate::gelu::gelu_erf_backward;
use crate::graph_node::PrecomputedOutput;
use crate::layer_norm::layer_norm_backward;
use crate::softmax::softmax_backward;
use crate::{gelu_erf, layer_norm, linear, softmax_last_dim};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Operands `(x, [norm weight | norm bias] (f32), [fc1 weight | fc1 bias | fc2 weight | fc2
/// bias] (the activations' dtype))`: two packed vectors because the norm's parameters stay f32
/// next to bf16 linear weights under mixed precision.
struct BranchGraphOp {
    dim: usize,
    /// `in`'s output width (MLP: 4C; attention: 3C) and `out`'s input width (4C; C).
    hidden: usize,
    width: usize,
    eps: f32,
    /// `[B, 1, ...]` in the activations' dtype (stochastic depth), or none.
    scale: Option<Tensor>,
    /// The forward's result, handed to candle once (the node's output) and then dropped.
    output: PrecomputedOutput,
    /// LayerNorm's output (`in`'s input) and `inner`'s output (`out`'s input).
    normalized: Tensor,
    inner_out: Tensor,
    inner: Saved,
}

/// What the inner function's backward needs.
enum Saved {
    /// GELU's input.
    Gelu { h: Tensor },
    /// The scaled queries, keys, values (`[B, heads, N, D]`) and the attention weights.
    Attention {
        heads: usize,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        p: Tensor,
    },
}

impl Saved {
    /// The gradient at `in`'s output (`[B, ..., hidden]`) from the one at `inner`'s output.
    fn backward(&self, d_out: &Tensor) -> Result<Tensor> {
        match self {
            Saved::Gelu { h } => gelu_erf_backward(h, d_out),
            Saved::Attention { heads, q, k, v, p } => {
                let (b, n, c) = d_out.dims3()?;
                let hd = c / heads;
                let d_o = d_out
                    .reshape((b, n, *heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
                let dp = d_o.matmul(&v.t()?)?;
                let dv = p.t()?.matmul(&d_o)?;
                let ds = softmax_backward(p, &dp)?;
                // q was scaled by hd^-1/2 before the product: so is its gradient.
                let dq = (ds.matmul(k)? * (hd as f64).powf(-0.5))?;
                let dk = ds.t()?.matmul(q)?;
                Tensor::stack(&[dq, dk, dv], 0)?
                    .permute((1, 3, 0, 2, 4))?
                    .contiguous()?
                    .reshape((b, n, 3 * c))
            }
        }
    }
}

/// `inner` on `in`'s output `h`: its output and what its backward needs.
fn inner_forward(inner: Inner, h: &Tensor) -> Result<(Tensor, Saved)> {
    match inner {
        Inner::Gelu => Ok((gelu_erf(h)?, Saved::Gelu { h: h.clone() })),
        Inner::Attention { heads } => {
            let (b, n, c3) = h.dims3()?;
            let (c, hd) = (c3 / 3, c3 / 3 / heads);
            let parts = h.reshape((b, n, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
            let q = (parts.get(0)? * (hd as f64).powf(-0.5))?.contiguous()?;
            let k = parts.get(1)?.contiguous()?;
            let v = parts.get(2)?.contiguous()?;
            let p = softmax_last_dim(&q.matmul(&k.t()?)?)?;
            let out = p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
            Ok((out, Saved::Attention { heads, q, k, v, p }))
        }
    }
}

impl CustomOp3 for BranchGraphOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-branch-graph"
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
        self.output.cpu()
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
        self.output.cuda()
    }

    fn bwd(
        &self,
        x: &Tensor,
        norm: &Tensor,
        lin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (c, hid, wid) = (self.dim, self.hidden, self.width);
        let (x, norm, lin) = (x.detach(), norm.detach(), lin.detach());
        let w1 = lin.narrow(0, 0, hid * c)?.reshape((hid, c))?;
        let w2 = lin.narrow(0, hid * c + hid, c * wid)?.reshape((c, wid))?;
        let (gamma, beta) = (norm.narrow(0, 0, c)?, norm.narrow(0, c, c)?);
        let (l, a) = (&self.normalized, &self.inner_out);
        let rows = x.elem_count() / c;
        let dy = dy.contiguous()?;
        // fc2's output gradient, then fc2's backward.
        let g = match &self.scale {
            Some(s) => dy.broadcast_mul(s)?,
            None => dy.clone(),
        };
        let g2 = g.reshape((rows, c))?;
        let da = g2.matmul(&w2)?;
        let dw2 = g2.t()?.matmul(&a.reshape((rows, wid))?)?;
        let db2 = column_sum(&g2)?;
        // The inner function (in the activations' shape), then `in`.
        let dh = self.inner.backward(&da.reshape(a.shape())?)?;
        let dh = dh.reshape((rows, hid))?;
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
/// parameters, on a device with the LayerNorm, GELU and softmax kernels (`dispatch::fused`).
pub(super) fn applies(x: &Tensor, w: &BranchWeights) -> bool {
    crate::dispatch::fused(
        &[x, w.in_weight, w.in_bias, w.out_weight, w.out_bias],
        &[w.norm_weight, w.norm_bias],
    ) && x.rank() >= 2
}

/// `x + s ⊙ out(inner(in(layer_norm(x))))` as one graph node; `scale` is `[batch]` or none,
/// shapes already checked by the caller.
pub(super) fn residual_branch(
    x: &Tensor,
    w: &BranchWeights,
    inner: Inner,
    scale: Option<&Tensor>,
) -> Result<Tensor> {
    let (dim, hidden, width) = (
        x.dim(candle_core::D::Minus1)?,
        w.in_weight.dim(0)?,
        w.out_weight.dim(1)?,
    );
    let detach = |t: &Tensor| t.detach();
    let xd = x.contiguous()?.detach();
    let l = layer_norm(
        &xd,
        &detach(w.norm_weight),
        &detach(w.norm_bias),
        w.norm_eps,
    )?;
    let h = linear(&l, &detach(w.in_weight), Some(&detach(w.in_bias)))?;
    let (a, saved) = inner_forward(inner, &h)?;
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
    if !std::iter::once(x).chain(w.all()).any(|t| t.track_op()) {
        // Nothing to differentiate (evaluation): no node, no copy of the output.
        return Ok(y);
    }
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
    let op = BranchGraphOp {
        dim,
        hidden,
        width,
        eps: w.norm_eps as f32,
        scale,
        output: PrecomputedOutput::new("residual branch", y),
        normalized: l,
        inner_out: a,
        inner: saved,
    };
    x.contiguous()?.apply_op3(&norm, &lin, op)
}
