//! A transformer block's two residual sub-blocks as one op each:
//! `y = x + s ⊙ out(inner(in(layer_norm(x))))`, where `in` and `out` are linear layers and
//! `inner` is the exact GELU (the MLP: `fc1`, `fc2`) or multi-head attention on the fused qkv
//! projection (`qkv`, `proj`); `s` is a per-sample branch scale (stochastic depth).
//!
//! Composed from separate ops, candle's backward creates a zero tensor and adds into it for every
//! edge of the graph: LayerNorm's output, both linear outputs, GELU's or attention's output, the
//! drop-path product and both inputs of the residual add, several of them MLP-wide (4x the token
//! width). Those zero-fills and adds run serially on the calling thread and were ~13% of a
//! DeiT-Small training step on two cores. As one op a sub-block has a single activation edge
//! (`x`) and one parameter edge (its six parameters packed into one vector), and its backward
//! hands back `dx` with the residual gradient already added.
//!
//! On CUDA a whole chain of sub-blocks (a transformer's body, [`residual_branches`]) is one
//! graph node (`chain.rs`), so no boundary between sub-blocks has an edge at all.

mod chain;
mod graph;

use crate::attention::{self, Geom};
use crate::cpu::gemm::Mat;
use crate::cpu::normal;
use crate::cpu::slices::{contiguous_f32, with_f32};
use crate::cpu::uninit::{ensure_len, Output};
use crate::dispatch::cpu_only;
use crate::layer_norm::{backward_rows, forward_rows};
use crate::linear::{affine_rows, column_sums, product};
use crate::{attention_qkv, gelu_erf, layer_norm, linear};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Elements per rayon task of the element-wise passes.
const CHUNK: usize = 1 << 13;

/// The parameters of a sub-block: the LayerNorm before it and the two linear layers
/// (`in: [hidden, dim]`, `out: [dim, width]`, with biases): timm's `Block.norm2` with
/// `Block.mlp.fc1`/`fc2`, or `Block.norm1` with `Block.attn.qkv`/`proj`.
#[derive(Clone, Copy)]
pub struct BranchWeights<'a> {
    pub norm_weight: &'a Tensor,
    pub norm_bias: &'a Tensor,
    pub norm_eps: f64,
    pub in_weight: &'a Tensor,
    pub in_bias: &'a Tensor,
    pub out_weight: &'a Tensor,
    pub out_bias: &'a Tensor,
}

/// What runs between a sub-block's two linear layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BranchKind {
    /// The exact (erf) GELU: [`residual_mlp`].
    Mlp,
    /// Multi-head attention on the fused qkv projection: [`residual_attention`].
    Attention { heads: usize },
}

/// One sub-block of a chain ([`residual_branches`]): its parameters, kind and per-sample
/// branch scale (`[batch]`, stochastic depth; `None`: 1).
#[derive(Clone, Copy)]
pub struct Branch<'a> {
    pub weights: BranchWeights<'a>,
    pub kind: BranchKind,
    pub scale: Option<&'a Tensor>,
}

impl Branch<'_> {
    fn inner(&self) -> Inner {
        match self.kind {
            BranchKind::Mlp => Inner::Gelu,
            BranchKind::Attention { heads } => Inner::Attention { heads },
        }
    }
}

impl BranchWeights<'_> {
    fn all(&self) -> [&Tensor; 6] {
        [
            self.norm_weight,
            self.norm_bias,
            self.in_weight,
            self.in_bias,
            self.out_weight,
            self.out_bias,
        ]
    }
}

/// The function between a sub-block's two linear layers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Inner {
    /// The exact (erf) GELU, element-wise: width = hidden.
    Gelu,
    /// [`attention_qkv`] with this many heads over `[B, N, 3C]`: hidden `3C`, width `C`.
    Attention { heads: usize },
}

/// `x + s ⊙ fc2(gelu_erf(fc1(layer_norm(x))))` over the last dimension of `x` (rank >= 2, first
/// dimension the batch); `branch_scale` (shape `[batch]`) scales each sample's branch output, as
/// stochastic depth does (`None`: 1). Differentiable in `x` and all six parameters.
///
/// f32 on the CPU runs the fused op; elsewhere [`residual_mlp_composed`].
pub fn residual_mlp(
    x: &Tensor,
    w: &BranchWeights,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    residual_branch(x, w, Inner::Gelu, branch_scale)
}

/// `x + s ⊙ proj(attention_qkv(qkv(layer_norm(x)), heads))` for tokens `x: [B, N, C]`, as
/// [`residual_mlp`] (the attention is [`attention_qkv`]'s).
pub fn residual_attention(
    x: &Tensor,
    w: &BranchWeights,
    heads: usize,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    check_tokens(x)?;
    residual_branch(x, w, Inner::Attention { heads }, branch_scale)
}

/// An attention sub-block's input must be tokens, `[B, N, C]`.
fn check_tokens(x: &Tensor) -> Result<()> {
    if x.rank() != 3 {
        candle_core::bail!(
            "residual_attention: tokens must be [B, N, C], got {:?}",
            x.dims()
        );
    }
    Ok(())
}

/// [`residual_mlp`] composed from the separate differentiable ops (any device or dtype; also
/// the fused op's test oracle).
pub fn residual_mlp_composed(
    x: &Tensor,
    w: &BranchWeights,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    composed(x, w, Inner::Gelu, branch_scale)
}

/// [`residual_attention`] composed from the separate differentiable ops.
pub fn residual_attention_composed(
    x: &Tensor,
    w: &BranchWeights,
    heads: usize,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    composed(x, w, Inner::Attention { heads }, branch_scale)
}

fn composed(x: &Tensor, w: &BranchWeights, inner: Inner, scale: Option<&Tensor>) -> Result<Tensor> {
    let h = linear(
        &layer_norm(x, w.norm_weight, w.norm_bias, w.norm_eps)?,
        w.in_weight,
        Some(w.in_bias),
    )?;
    let g = match inner {
        Inner::Gelu => gelu_erf(&h)?,
        Inner::Attention { heads } => attention_qkv(&h, heads)?,
    };
    let m = linear(&g, w.out_weight, Some(w.out_bias))?;
    let m = match scale {
        Some(s) => crate::scale_per_sample(&m, s)?,
        None => m,
    };
    x + m
}

fn residual_branch(
    x: &Tensor,
    w: &BranchWeights,
    inner: Inner,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    let mut all: Vec<&Tensor> = vec![x];
    all.extend(w.all());
    all.extend(branch_scale);
    if !cpu_only(&all) && graph::applies(x, w) {
        check_shapes(x, w, inner, branch_scale)?;
        return one_node(x, w, inner, branch_scale);
    }
    if !cpu_only(&all) || x.rank() < 2 {
        return composed(x, w, inner, branch_scale);
    }
    let (dim, hidden, width) = check_shapes(x, w, inner, branch_scale)?;
    let batch = x.dim(0)?;
    let scale = match branch_scale {
        Some(s) => s.contiguous()?,
        None => Tensor::ones(batch, DType::F32, x.device())?,
    };
    let params = crate::graph_node::packed(w.all())?;
    let op = ResidualBranchOp {
        dim,
        hidden,
        width,
        inner,
        eps: w.norm_eps as f32,
        scaled: branch_scale.is_some(),
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op3(&params, &scale, op)
}

/// The sub-blocks one after another on `x` (each [`residual_mlp`] or [`residual_attention`]
/// by its kind): on CUDA one graph node for the whole chain (see the module doc), elsewhere
/// each sub-block as those functions run it; the same values and gradients either way. No
/// sub-block: `x`.
pub fn residual_branches(x: &Tensor, branches: &[Branch]) -> Result<Tensor> {
    // Where each sub-block alone would take its graph node (CUDA), the chain takes one.
    let graph_path = branches.iter().all(|b| {
        let mut all: Vec<&Tensor> = vec![x];
        all.extend(b.weights.all());
        all.extend(b.scale);
        !cpu_only(&all) && graph::applies(x, &b.weights)
    });
    if graph_path && !branches.is_empty() {
        return chain_node(x, branches);
    }
    let mut y = x.clone();
    for b in branches {
        y = match b.kind {
            BranchKind::Mlp => residual_mlp(&y, &b.weights, b.scale)?,
            BranchKind::Attention { heads } => residual_attention(&y, &b.weights, heads, b.scale)?,
        };
    }
    Ok(y)
}

/// [`residual_branches`] through the one-node graph path that CUDA takes, whatever the device
/// (doc-hidden: lets the CPU tests run it against the composed ops).
#[doc(hidden)]
pub fn residual_branches_graph(x: &Tensor, branches: &[Branch]) -> Result<Tensor> {
    if branches.iter().any(|b| !graph::applies(x, &b.weights)) {
        candle_core::bail!(
            "residual_branches_graph: needs the fused LayerNorm, GELU and softmax kernels' dtypes"
        );
    }
    chain_node(x, branches)
}

/// The chain as one node, each sub-block's shapes checked first (a residual keeps `x`'s shape,
/// so every sub-block sees it).
fn chain_node(x: &Tensor, branches: &[Branch]) -> Result<Tensor> {
    for b in branches {
        if let BranchKind::Attention { .. } = b.kind {
            check_tokens(x)?;
        }
        check_shapes(x, &b.weights, b.inner(), b.scale)?;
    }
    let links: Vec<chain::Link> = branches
        .iter()
        .map(|b| chain::Link {
            weights: &b.weights,
            inner: b.inner(),
            scale: b.scale,
        })
        .collect();
    chain::chain(x, &links)
}

/// One sub-block as a chain of one node (shapes already checked).
fn one_node(x: &Tensor, w: &BranchWeights, inner: Inner, scale: Option<&Tensor>) -> Result<Tensor> {
    chain::chain(
        x,
        &[chain::Link {
            weights: w,
            inner,
            scale,
        }],
    )
}

/// [`residual_mlp`] through the one-node graph path that CUDA takes (doc-hidden: lets the CPU
/// tests run it against the composed ops).
#[doc(hidden)]
pub fn residual_mlp_graph(
    x: &Tensor,
    w: &BranchWeights,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    if !graph::applies(x, w) {
        candle_core::bail!(
            "residual_mlp_graph: needs the fused LayerNorm and GELU kernels' dtypes"
        );
    }
    check_shapes(x, w, Inner::Gelu, branch_scale)?;
    one_node(x, w, Inner::Gelu, branch_scale)
}

/// [`residual_attention`] through the one-node graph path that CUDA takes (doc-hidden, for the
/// CPU tests).
#[doc(hidden)]
pub fn residual_attention_graph(
    x: &Tensor,
    w: &BranchWeights,
    heads: usize,
    branch_scale: Option<&Tensor>,
) -> Result<Tensor> {
    if !graph::applies(x, w) || x.rank() != 3 {
        candle_core::bail!(
            "residual_attention_graph: needs [B, N, C] tokens in the fused kernels' dtypes"
        );
    }
    check_shapes(x, w, Inner::Attention { heads }, branch_scale)?;
    one_node(x, w, Inner::Attention { heads }, branch_scale)
}

/// `(dim, hidden, width)` of a sub-block after checking its parameters and branch scale fit
/// the input (errors name every shape).
fn check_shapes(
    x: &Tensor,
    w: &BranchWeights,
    inner: Inner,
    branch_scale: Option<&Tensor>,
) -> Result<(usize, usize, usize)> {
    let (dim, hidden) = (x.dim(candle_core::D::Minus1)?, w.in_weight.dim(0)?);
    let width = match inner {
        Inner::Gelu => hidden,
        Inner::Attention { heads } => {
            Geom::new(&[x.dim(0)?, x.dim(1)?, hidden], heads)?;
            hidden / 3
        }
    };
    let shapes_fit = w.norm_weight.dims() == [dim]
        && w.norm_bias.dims() == [dim]
        && w.in_weight.dims() == [hidden, dim]
        && w.in_bias.dims() == [hidden]
        && w.out_weight.dims() == [dim, width]
        && w.out_bias.dims() == [dim];
    if !shapes_fit {
        candle_core::bail!(
            "residual {inner:?} branch: input {:?} with norm {:?}/{:?}, in {:?}/{:?}, out {:?}/{:?} do not fit",
            x.dims(),
            w.norm_weight.dims(),
            w.norm_bias.dims(),
            w.in_weight.dims(),
            w.in_bias.dims(),
            w.out_weight.dims(),
            w.out_bias.dims()
        );
    }
    let batch = x.dim(0)?;
    if let Some(s) = branch_scale {
        if s.dims() != [batch] {
            candle_core::bail!(
                "residual {inner:?} branch: branch scale {:?} must be [batch = {batch}]",
                s.dims()
            );
        }
    }
    Ok((dim, hidden, width))
}

/// What the backward needs from the forward, kept by the op (its graph node) until the graph is
/// dropped: the normalised input (`in`'s input), `in`'s output (`inner`'s input) and `inner`'s
/// output (`out`'s input).
struct Saved {
    xn: Vec<f32>,
    h: Vec<f32>,
    g: Vec<f32>,
}

struct ResidualBranchOp {
    dim: usize,
    hidden: usize,
    /// `inner`'s output width (`out`'s input).
    width: usize,
    inner: Inner,
    eps: f32,
    scaled: bool,
    saved: Mutex<Option<Saved>>,
}

/// Offsets of the six parameters in the packed vector, in [`BranchWeights::all`] order.
struct Packed {
    norm_w: std::ops::Range<usize>,
    norm_b: std::ops::Range<usize>,
    in_w: std::ops::Range<usize>,
    in_b: std::ops::Range<usize>,
    out_w: std::ops::Range<usize>,
    out_b: std::ops::Range<usize>,
}

impl Packed {
    fn new(op: &ResidualBranchOp) -> Self {
        let (d, h, w) = (op.dim, op.hidden, op.width);
        let mut at = 0;
        let mut next = |n: usize| {
            at += n;
            at - n..at
        };
        Self {
            norm_w: next(d),
            norm_b: next(d),
            in_w: next(h * d),
            in_b: next(h),
            out_w: next(d * w),
            out_b: next(d),
        }
    }
    fn len(&self) -> usize {
        self.out_b.end
    }
}

impl ResidualBranchOp {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Saved>>> {
        self.saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("residual branch: poisoned lock".into()))
    }

    /// The attention geometry for `rows` tokens in `batch` images.
    fn attention_geom(&self, heads: usize, batch: usize, rows: usize) -> Result<Geom> {
        Ok(Geom::new(&[batch, rows / batch, self.hidden], heads)?.1)
    }

    /// `inner(h)`: `[rows, hidden] -> [rows, width]`.
    fn inner_forward(&self, h: &[f32], batch: usize, rows: usize) -> Result<Vec<f32>> {
        let mut g = Output::new(rows * self.width);
        match self.inner {
            Inner::Gelu => g
                .slots()
                .par_chunks_mut(CHUNK)
                .zip(h.par_chunks(CHUNK))
                .for_each(|(gc, hc)| normal::gelu(gc, hc)),
            Inner::Attention { heads } => {
                attention::forward_slices(&self.attention_geom(heads, batch, rows)?, h, g.slots())
            }
        }
        // SAFETY: GELU writes each chunk element for element (widths equal); attention writes
        // all of its [B, N, C] output.
        Ok(unsafe { g.assume_init() })
    }

    /// The gradient of `inner`'s input given its output gradient `dg`.
    fn inner_backward(&self, h: &[f32], dg: &[f32], batch: usize, rows: usize) -> Result<Vec<f32>> {
        let mut dh = Output::new(rows * self.hidden);
        match self.inner {
            Inner::Gelu => dh
                .slots()
                .par_chunks_mut(CHUNK)
                .zip(h.par_chunks(CHUNK).zip(dg.par_chunks(CHUNK)))
                .for_each(|(o, (hc, gc))| normal::gelu_backward(o, hc, gc)),
            Inner::Attention { heads } => attention::backward_slices(
                &self.attention_geom(heads, batch, rows)?,
                h,
                dg,
                dh.slots(),
            ),
        }
        // SAFETY: as in `inner_forward`, for the input-shaped gradient.
        Ok(unsafe { dh.assume_init() })
    }
}

impl CustomOp3 for ResidualBranchOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-branch"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "residual branch input")?;
        let p = contiguous_f32(ps, pl, "residual branch parameters")?;
        let s = contiguous_f32(ss, sl, "residual branch scale")?;
        let (d, hd, wd) = (self.dim, self.hidden, self.width);
        let at = Packed::new(self);
        ensure_len("residual branch parameters", p.len(), at.len())?;
        let rows = x.len() / d.max(1);
        let batch = xl.dims()[0];
        if d == 0 || rows * d != x.len() || batch == 0 || rows % batch != 0 || s.len() != batch {
            candle_core::bail!(
                "residual branch: input {:?}, {} branch scales, width {d}",
                xl.dims(),
                s.len()
            );
        }
        let mut xn = Output::new(x.len());
        forward_rows(x, &p[at.norm_w], &p[at.norm_b], self.eps, xn.slots());
        // SAFETY: `forward_rows` writes every row of `xn` (rows of d, checked above).
        let xn = unsafe { xn.assume_init() };
        let h = affine_rows(&xn, rows, d, &p[at.in_w], hd, &p[at.in_b]);
        let g = self.inner_forward(&h, batch, rows)?;
        let mut y = affine_rows(&g, rows, wd, &p[at.out_w], d, &p[at.out_b]);
        let per_sample = rows / batch * d;
        y.par_chunks_mut(per_sample)
            .zip(x.par_chunks(per_sample))
            .zip(s.par_iter())
            .for_each(|((yr, xr), &sv)| {
                for (o, &v) in yr.iter_mut().zip(xr) {
                    *o = v + sv * *o;
                }
            });
        *self.lock()? = Some(Saved { xn, h, g });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        scale: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (d, hd, wd) = (self.dim, self.hidden, self.width);
        let at = Packed::new(self);
        let guard = self.lock()?;
        let sv = guard.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("residual branch: backward before forward".into())
        })?;
        let rows = sv.xn.len() / d;
        let batch = x.dim(0)?;
        let (dx, dp) = with_f32(x, |xv| {
            with_f32(params, |p| {
                with_f32(dy, |gy| {
                    with_f32(scale, |s| {
                        let scaled;
                        let dm: &[f32] = if self.scaled {
                            let per_sample = gy.len() / s.len();
                            scaled = gy
                                .par_chunks(per_sample)
                                .zip(s.par_iter())
                                .flat_map_iter(|(c, &f)| c.iter().map(move |v| v * f))
                                .collect::<Vec<f32>>();
                            &scaled
                        } else {
                            gy
                        };
                        let dm_mat = Mat::row_major(dm, rows, d);
                        let db_out = column_sums(dm, rows, d);
                        let dw_out = product(dm_mat.t(), &sv.g, wd);
                        let dg = product(dm_mat, &p[at.out_w.clone()], wd);
                        let dh = self.inner_backward(&sv.h, &dg, batch, rows)?;
                        drop(dg);
                        let dh_mat = Mat::row_major(&dh, rows, hd);
                        let db_in = column_sums(&dh, rows, hd);
                        let dw_in = product(dh_mat.t(), &sv.xn, d);
                        let dxn = product(dh_mat, &p[at.in_w.clone()], d);
                        drop(dh);
                        let mut dx = Output::new(xv.len());
                        let (dnw, dnb) = backward_rows(
                            xv,
                            &p[at.norm_w.clone()],
                            &dxn,
                            self.eps,
                            dx.slots(),
                            Some(gy),
                        );
                        // SAFETY: `backward_rows` writes every element of `dx`.
                        let dx = unsafe { dx.assume_init() };
                        let mut dp = Vec::with_capacity(at.len());
                        for part in [&dnw, &dnb, &dw_in, &db_in, &dw_out, &db_out] {
                            dp.extend_from_slice(part);
                        }
                        Ok((dx, dp))
                    })
                })
            })
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dp = Tensor::from_vec(dp, params.shape(), params.device())?;
        Ok((Some(dx), Some(dp), None))
    }
}
