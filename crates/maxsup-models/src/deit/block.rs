//! Transformer block: `x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

use candle_core::{Result, Tensor};

use crate::init::Init;
use crate::layers::{drop_path_scale, like, LayerNorm, Linear};
use crate::params::Scope;

/// timm's ViT LayerNorm epsilon.
pub(crate) const LN_EPS: f64 = 1e-6;

/// A timm-initialised Linear: trunc-normal(0.02) weight, zero bias.
pub(crate) fn timm_linear(s: &Scope, inp: usize, out: usize) -> Result<Linear> {
    Linear::new(s, inp, out, Init::timm_trunc_normal(), Init::Const(0.0))
}

/// Multi-head self-attention with a fused `qkv` projection (with bias) and output `proj`.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

/// A sub-block's parameters as `maxsup_ops` runs it: the linear ones in the activation dtype
/// (bf16 under mixed precision, as `Linear::forward` casts them), the norm's f32, and its
/// stochastic-depth scale for this step.
pub(crate) struct SubBlock<'a> {
    norm: &'a LayerNorm,
    kind: maxsup_ops::BranchKind,
    in_weight: Tensor,
    in_bias: Tensor,
    out_weight: Tensor,
    out_bias: Tensor,
    scale: Option<Tensor>,
}

impl<'a> SubBlock<'a> {
    fn new(
        norm: &'a LayerNorm,
        (inp, out): (&Linear, &Linear),
        kind: maxsup_ops::BranchKind,
        x: &Tensor,
        scale: Option<Tensor>,
    ) -> Result<Self> {
        Ok(Self {
            norm,
            kind,
            in_weight: like(inp.weight(), x)?,
            in_bias: like(inp.bias(), x)?,
            out_weight: like(out.weight(), x)?,
            out_bias: like(out.bias(), x)?,
            scale,
        })
    }

    /// `x + s ⊙ out(inner(in(norm(x))))` as `maxsup_ops::residual_branches` takes it.
    pub(crate) fn branch(&self) -> maxsup_ops::Branch<'_> {
        maxsup_ops::Branch {
            weights: maxsup_ops::BranchWeights {
                norm_weight: self.norm.weight(),
                norm_bias: self.norm.bias(),
                norm_eps: self.norm.eps(),
                in_weight: &self.in_weight,
                in_bias: &self.in_bias,
                out_weight: &self.out_weight,
                out_bias: &self.out_bias,
            },
            kind: self.kind,
            scale: self.scale.as_ref(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    drop_path_rate: f64,
}

impl Block {
    pub(crate) fn new(
        s: &Scope,
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
        drop_path_rate: f64,
    ) -> Result<Self> {
        let a = s.pp("attn");
        let m = s.pp("mlp");
        Ok(Self {
            norm1: LayerNorm::new(&s.pp("norm1"), dim, LN_EPS)?,
            attn: Attention {
                qkv: timm_linear(&a.pp("qkv"), dim, 3 * dim)?,
                proj: timm_linear(&a.pp("proj"), dim, dim)?,
                num_heads: heads,
            },
            norm2: LayerNorm::new(&s.pp("norm2"), dim, LN_EPS)?,
            fc1: timm_linear(&m.pp("fc1"), dim, mlp_ratio * dim)?,
            fc2: timm_linear(&m.pp("fc2"), mlp_ratio * dim, dim)?,
            drop_path_rate,
        })
    }

    /// The block's two sub-blocks (attention, then the MLP) for tokens like `x`, each drawing
    /// its stochastic-depth scale in that order. Each is one op (norm, two linears, attention or
    /// GELU, drop path, residual add): one gradient edge for candle's backward instead of up to
    /// eight, and on CUDA the whole body's sub-blocks are one (`maxsup_ops::residual_branches`).
    pub(crate) fn sub_blocks(&self, x: &Tensor, train: bool) -> Result<[SubBlock<'_>; 2]> {
        let (rate, batch) = (self.drop_path_rate, x.dim(0)?);
        let attn = SubBlock::new(
            &self.norm1,
            (&self.attn.qkv, &self.attn.proj),
            maxsup_ops::BranchKind::Attention {
                heads: self.attn.num_heads,
            },
            x,
            drop_path_scale(batch, rate, train, x.device())?,
        )?;
        // timm's MLP uses nn.GELU: the exact erf form.
        let mlp = SubBlock::new(
            &self.norm2,
            (&self.fc1, &self.fc2),
            maxsup_ops::BranchKind::Mlp,
            x,
            drop_path_scale(batch, rate, train, x.device())?,
        )?;
        Ok([attn, mlp])
    }

    /// The first LayerNorm of the block for tokens `x` (Grad-CAM's target in the last block).
    pub(crate) fn norm1(&self, x: &Tensor) -> Result<Tensor> {
        self.norm1.forward(x)
    }

    /// The block in eval mode for tokens `x` whose first LayerNorm gave `n`: `x + attn(n)`, then
    /// the MLP sub-block. With `n` a leaf, a backward reaches it through the attention alone, as
    /// a hook on timm's `norm1` output sees it.
    pub(crate) fn forward_from_norm1(&self, x: &Tensor, n: &Tensor) -> Result<Tensor> {
        let heads = maxsup_ops::attention_qkv(&self.attn.qkv.forward(n)?, self.attn.num_heads)?;
        let t = (x + self.attn.proj.forward(&heads)?)?;
        let [_, mlp] = self.sub_blocks(&t, false)?;
        maxsup_ops::residual_branches(&t, &[mlp.branch()])
    }

    pub(crate) fn drop_path_rate(&self) -> f64 {
        self.drop_path_rate
    }
}
