//! Transformer block: `x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

use candle_core::{Result, Tensor};

use crate::init::Init;
use crate::layers::{drop_path, LayerNorm, Linear};
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
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // q/k/v split, scaled dot-product softmax and head merge in one op (maxsup-ops).
        let out = maxsup_ops::attention_qkv(&self.qkv.forward(x)?, self.num_heads)?;
        self.proj.forward(&out)
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

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.attn.forward(&self.norm1.forward(x)?)?;
        let x = (x + drop_path(&a, self.drop_path_rate, train)?)?;
        // timm's MLP uses nn.GELU: the exact erf form.
        let m = self.fc2.forward(&maxsup_ops::gelu_erf(
            &self.fc1.forward(&self.norm2.forward(&x)?)?,
        )?)?;
        x + drop_path(&m, self.drop_path_rate, train)?
    }

    pub(crate) fn drop_path_rate(&self) -> f64 {
        self.drop_path_rate
    }
}
