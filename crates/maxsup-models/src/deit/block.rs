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

impl Attention {
    /// `x + s ⊙ proj(attention(qkv(norm(x))))`: q/k/v split, scaled dot-product softmax and
    /// head merge inside the op (maxsup-ops).
    fn residual(&self, norm: &LayerNorm, x: &Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
        branch(norm, &self.qkv, &self.proj, x, |w| {
            maxsup_ops::residual_attention(x, w, self.num_heads, scale)
        })
    }
}

/// Runs `f` on a sub-block's parameters, the linear ones in the activation dtype (bf16 under
/// mixed precision, as `Linear::forward` casts them); the norm's stay f32.
fn branch(
    norm: &LayerNorm,
    inp: &Linear,
    out: &Linear,
    x: &Tensor,
    f: impl FnOnce(&maxsup_ops::BranchWeights) -> Result<Tensor>,
) -> Result<Tensor> {
    let (in_weight, in_bias) = (like(inp.weight(), x)?, like(inp.bias(), x)?);
    let (out_weight, out_bias) = (like(out.weight(), x)?, like(out.bias(), x)?);
    f(&maxsup_ops::BranchWeights {
        norm_weight: norm.weight(),
        norm_bias: norm.bias(),
        norm_eps: norm.eps(),
        in_weight: &in_weight,
        in_bias: &in_bias,
        out_weight: &out_weight,
        out_bias: &out_bias,
    })
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

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Each sub-block (norm, two linears, attention or GELU, drop path, residual add) is one
        // op: one gradient edge for candle's backward instead of up to eight.
        let rate = self.drop_path_rate;
        let scale = drop_path_scale(x.dim(0)?, rate, train, x.device())?;
        let x = self.attn.residual(&self.norm1, x, scale.as_ref())?;
        let scale = drop_path_scale(x.dim(0)?, rate, train, x.device())?;
        // timm's MLP uses nn.GELU: the exact erf form.
        branch(&self.norm2, &self.fc1, &self.fc2, &x, |w| {
            maxsup_ops::residual_mlp(&x, w, scale.as_ref())
        })
    }

    pub(crate) fn drop_path_rate(&self) -> f64 {
        self.drop_path_rate
    }
}
