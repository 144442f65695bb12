//! A transformer sub-block as one graph node on devices without its fused CPU kernel (CUDA):
//! the forward runs the separate ops (LayerNorm, linear, GELU or attention, linear: their CUDA
//! kernels and cuBLAS GEMMs) on detached inputs, and one node carries the result, so candle's
//! backward has a single activation edge (`x`) where the composed graph has seven (MLP) or a
//! dozen (attention, among them the `[B, heads, N, N]` scores), each costing a zero-fill and an
//! add of its gradient. The backward applies the ops' backward steps by hand, on the device:
//! GEMMs for the linear layers and the attention products (or one fused attention kernel), the
//! GELU, softmax and LayerNorm backward kernels, the residual path's gradient added to `dx`
//! inside LayerNorm's. The first linear's bias add runs inside the next pass over its output,
//! its gradient beside that pass's backward: in the MLP the GELU's kernels
//! (`crate::linear_bias`), in the attention the split into heads (`crate::qkv_heads`); the
//! second linear's bias, the stochastic-depth scale and the residual add are one pass after its
//! GEMM (`crate::residual_out`).
//!
//! This file is one sub-block's forward and backward ([`BranchTape`]); `chain.rs` is the node,
//! which carries a chain of them (a whole transformer's blocks) as one.

use super::{BranchWeights, Inner};
use crate::fused_attention::{attention_heads, attention_heads_backward};
use crate::layer_norm::layer_norm_backward;
use crate::linear_bias::{bias_gelu, bias_gelu_backward, bias_grad};
use crate::qkv_heads::{merge_qkv_heads, split_qkv_heads};
use crate::residual_out::{residual_bias_add, scaled_bias_grad};
use crate::softmax::softmax_backward;
use crate::{layer_norm, linear, softmax_last_dim};
use candle_core::{DType, Result, Tensor};

/// A sub-block's gradients: its input's (with the residual path's gradient in it), its norm's
/// weight and bias, and its linear layers' `[in weight, in bias, out weight, out bias]`.
pub(super) struct BranchGrads {
    pub(super) dx: Tensor,
    pub(super) norm: [Tensor; 2],
    pub(super) lin: [Tensor; 4],
}

/// One sub-block as the node ran it: its detached input and parameters and what its backward
/// needs of the forward.
pub(super) struct BranchTape {
    dim: usize,
    /// `out`'s input width (MLP: 4C; attention: C).
    width: usize,
    eps: f32,
    /// `[B]` in the activations' dtype (stochastic depth), or none.
    scale: Option<Tensor>,
    /// The sub-block's input (contiguous, detached): the previous one's output.
    x: Tensor,
    /// LayerNorm's weight and bias (f32), `in`'s weight and bias and `out`'s weight, detached.
    gamma: Tensor,
    beta: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    /// LayerNorm's output (`in`'s input) and `inner`'s output (`out`'s input).
    normalized: Tensor,
    inner_out: Tensor,
    inner: Saved,
}

/// What the inner function's backward needs.
enum Saved {
    /// fc1's GEMM result before its bias (`[rows, hidden]`): `gelu(g + bias)` is the inner
    /// output.
    Gelu { g: Tensor },
    /// The heads' layout `[3, B, heads, N, D]` (the scaled queries, keys, values) and what the
    /// forward kept of the attention weights.
    Attention {
        heads: usize,
        qkv: Tensor,
        weights: AttentionWeights,
    },
}

/// The attention weights as the unfused forward keeps them, or as the fused kernel does.
enum AttentionWeights {
    /// softmax(q k^T), `[B, heads, N, N]`.
    Probabilities(Tensor),
    /// Each query row's log-sum-exp of its scores (`[B, heads, N]`, f32), from which the fused
    /// backward recomputes the probabilities.
    LogSumExp(Tensor),
}

impl Saved {
    /// The gradient at `in`'s output (`[rows, hidden]`) from the one at `inner`'s output
    /// `out` (`[B, ..., width]`), and `in`'s bias gradient (both inner backwards yield it in the
    /// same pass).
    fn backward(&self, out: &Tensor, d_out: &Tensor, in_bias: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            Saved::Gelu { g } => bias_gelu_backward(g, in_bias, &d_out.reshape(g.shape())?),
            Saved::Attention {
                heads,
                qkv,
                weights,
            } => {
                let p = match weights {
                    AttentionWeights::Probabilities(p) => p,
                    AttentionWeights::LogSumExp(lse) => {
                        // Fits wherever the forward did (kernel_geometry's tests check it).
                        let g =
                            attention_heads_backward(qkv, lse, out, d_out)?.ok_or_else(|| {
                                candle_core::Error::Msg(format!(
                                    "attention: the fused backward does not fit {:?} where the \
                                 forward did",
                                    qkv.shape()
                                ))
                            })?;
                        return merge_qkv_heads(&g.get(0)?, &g.get(1)?, &g.get(2)?);
                    }
                };
                let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
                let (b, n, c) = d_out.dims3()?;
                let hd = c / heads;
                let d_o = d_out
                    .reshape((b, n, *heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()?;
                let dp = d_o.matmul(&v.t()?)?;
                let dv = p.t()?.matmul(&d_o)?;
                let ds = softmax_backward(p, &dp)?;
                // The scaled queries' gradient: merge_qkv_heads scales it as q was.
                let dq = ds.matmul(&k)?;
                let dk = ds.t()?.matmul(&q)?;
                merge_qkv_heads(&dq, &dk, &dv)
            }
        }
    }
}

/// `inner(in(l))` for the normalised input `l` and `in`'s detached weight and bias: its output
/// and what its backward needs.
fn inner_forward(inner: Inner, l: &Tensor, w: &Tensor, bias: &Tensor) -> Result<(Tensor, Saved)> {
    match inner {
        Inner::Gelu => {
            let c = l.dim(candle_core::D::Minus1)?;
            let g = linear(&l.reshape(((), c))?, w, None)?;
            let mut shape = l.dims().to_vec();
            *shape.last_mut().expect("rank >= 2") = g.dim(1)?;
            let a = bias_gelu(&g, bias)?.reshape(shape)?;
            Ok((a, Saved::Gelu { g }))
        }
        Inner::Attention { heads } => {
            let (b, n, c) = l.dims3()?;
            let g = linear(&l.reshape((b * n, c))?, w, None)?.reshape((b, n, ()))?;
            // [3, B, heads, N, hd]: the bias added and q scaled by hd^-1/2 in one pass.
            let qkv = split_qkv_heads(&g, bias, heads)?;
            // One tensor-core kernel where it applies (`set_fused_attention`), else two
            // batched GEMMs around the softmax kernel and a copy merging the heads.
            let (out, weights) = match attention_heads(&qkv)? {
                Some((out, lse)) => (out, AttentionWeights::LogSumExp(lse)),
                None => {
                    let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
                    let p = softmax_last_dim(&q.matmul(&k.t()?)?)?;
                    let out = p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
                    (out, AttentionWeights::Probabilities(p))
                }
            };
            Ok((
                out,
                Saved::Attention {
                    heads,
                    qkv,
                    weights,
                },
            ))
        }
    }
}

impl BranchTape {
    /// `x + s ⊙ out(inner(in(layer_norm(x))))` on `x` (contiguous, detached) by the separate
    /// ops on detached parameters; `scale` is `[batch]` or none, shapes already checked by the
    /// caller. Returns the tape and the output.
    pub(super) fn forward(
        x: &Tensor,
        w: &BranchWeights,
        inner: Inner,
        scale: Option<&Tensor>,
    ) -> Result<(Self, Tensor)> {
        let (dim, width) = (x.dim(candle_core::D::Minus1)?, w.out_weight.dim(1)?);
        let (gamma, beta) = (w.norm_weight.detach(), w.norm_bias.detach());
        let (w1, b1) = (w.in_weight.detach(), w.in_bias.detach());
        let w2 = w.out_weight.detach();
        let l = layer_norm(x, &gamma, &beta, w.norm_eps)?;
        let (a, saved) = inner_forward(inner, &l, &w1, &b1)?;
        // The output linear's bias, the scale and the residual add in one pass after its GEMM.
        let o = linear(&a, &w2, None)?;
        let scale = match scale {
            Some(s) => Some(s.detach().flatten_all()?.to_dtype(DType::F32)?),
            None => None,
        };
        let y = residual_bias_add(x, &o, &w.out_bias.detach(), scale.as_ref())?;
        let tape = Self {
            dim,
            width,
            eps: w.norm_eps as f32,
            scale,
            x: x.clone(),
            gamma,
            beta,
            w1,
            b1,
            w2,
            normalized: l,
            inner_out: a,
            inner: saved,
        };
        Ok((tape, y))
    }

    /// The sub-block's gradients from the output gradient `dy`.
    pub(super) fn backward(&self, dy: &Tensor) -> Result<BranchGrads> {
        let (c, wid) = (self.dim, self.width);
        let (x, l, a) = (&self.x, &self.normalized, &self.inner_out);
        let rows = x.elem_count() / c;
        let dy = dy.contiguous()?;
        // fc2's output gradient with its bias gradient, then fc2's backward.
        let (g2, db2) = match &self.scale {
            Some(s) => {
                let (g, db) = scaled_bias_grad(&dy, s)?;
                (g.reshape((rows, c))?, db)
            }
            None => {
                let g = dy.reshape((rows, c))?;
                let db = bias_grad(&g)?;
                (g, db)
            }
        };
        let da = g2.matmul(&self.w2)?;
        let dw2 = g2.t()?.matmul(&a.reshape((rows, wid))?)?;
        // The inner function (in the activations' shape), then `in`.
        let (dh, db1) = self.inner.backward(a, &da.reshape(a.shape())?, &self.b1)?;
        let dl = dh.matmul(&self.w1)?;
        let dw1 = dh.t()?.matmul(&l.reshape((rows, c))?)?;
        // LayerNorm, and the residual path.
        let (dx, dgamma, dbeta) = layer_norm_backward(
            x,
            &self.gamma,
            &self.beta,
            &dl.reshape(x.shape())?,
            Some(&dy),
            self.eps,
        )?;
        Ok(BranchGrads {
            dx,
            norm: [dgamma, dbeta],
            lin: [dw1, db1, dw2, db2],
        })
    }
}

/// Whether the graph node applies: activations and linear parameters of one dtype, f32 norm
/// parameters, on a device with the LayerNorm, GELU and softmax kernels (`dispatch::fused`).
pub(super) fn applies(x: &Tensor, w: &BranchWeights) -> bool {
    crate::dispatch::fused(
        &[x, w.in_weight, w.in_bias, w.out_weight, w.out_bias],
        &[w.norm_weight, w.norm_bias],
    ) && x.rank() >= 2
}
