//! A stand-in DeiT (ViT with CLS token) built directly on maxsup-ops' fused layers, selected
//! with `--model ops:deit_small_patch4_32` (or `ops:deit_tiny_patch4_32`).
//!
//! Why: it measures what the registry DeiT gains once it calls `maxsup_ops::matmul` for the
//! attention products and `maxsup_ops::gelu_erf` in the MLP (besides the fused LayerNorm and
//! softmax it already uses). Random weights; no checkpoint compatibility is attempted.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use maxsup_ops::{conv2d, gelu_erf, layer_norm, linear, matmul, softmax_last_dim};

/// Creates and registers a trainable tensor.
fn param(vars: &mut Vec<(String, Var)>, name: String, t: Tensor) -> Result<Var> {
    let v = Var::from_tensor(&t)?;
    vars.push((name, v.clone()));
    Ok(v)
}

fn normal(vars: &mut Vec<(String, Var)>, name: String, shape: &[usize], std: f32) -> Result<Var> {
    param(vars, name, Tensor::randn(0f32, std, shape, &Device::Cpu)?)
}

fn constant(vars: &mut Vec<(String, Var)>, name: String, n: usize, v: f64) -> Result<Var> {
    param(
        vars,
        name,
        (Tensor::ones(n, DType::F32, &Device::Cpu)? * v)?,
    )
}

struct Lin {
    w: Var,
    b: Var,
}

impl Lin {
    fn new(vars: &mut Vec<(String, Var)>, name: &str, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            w: normal(vars, format!("{name}.weight"), &[out, inp], 0.02)?,
            b: constant(vars, format!("{name}.bias"), out, 0.0)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(linear(x, self.w.as_tensor(), Some(self.b.as_tensor()))?)
    }
}

struct Norm {
    w: Var,
    b: Var,
}

impl Norm {
    fn new(vars: &mut Vec<(String, Var)>, name: &str, d: usize) -> Result<Self> {
        Ok(Self {
            w: constant(vars, format!("{name}.weight"), d, 1.0)?,
            b: constant(vars, format!("{name}.bias"), d, 0.0)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(x, self.w.as_tensor(), self.b.as_tensor(), 1e-6)?)
    }
}

struct Block {
    norm1: Norm,
    qkv: Lin,
    proj: Lin,
    norm2: Norm,
    fc1: Lin,
    fc2: Lin,
    heads: usize,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .reshape((b, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * (hd as f64).powf(-0.5))?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let attn = softmax_last_dim(&matmul(&q, &k.t()?)?)?;
        let out = matmul(&attn, &v)?.transpose(1, 2)?.reshape((b, n, d))?;
        let x = (x + self.proj.forward(&out)?)?;
        let m = self
            .fc2
            .forward(&gelu_erf(&self.fc1.forward(&self.norm2.forward(&x)?)?)?)?;
        Ok((x + m)?)
    }
}

/// Patch embedding, CLS token, learned position embedding, blocks, final norm, linear head.
pub struct OpsDeiT {
    patch_w: Var,
    patch_b: Var,
    patch: usize,
    cls: Var,
    pos: Var,
    blocks: Vec<Block>,
    norm: Norm,
    head: Lin,
    /// Trainable parameters with unique names (for the optimizer).
    pub vars: Vec<(String, Var)>,
}

impl OpsDeiT {
    pub fn new(name: &str, classes: usize, img: usize) -> Result<Self> {
        let (dim, heads, patch) = match name {
            "deit_small_patch4_32" => (384, 6, 4),
            "deit_tiny_patch4_32" => (192, 3, 4),
            other => bail!(
                "unknown ops: model `{other}` (known: deit_small_patch4_32, deit_tiny_patch4_32)"
            ),
        };
        let depth = 12;
        let mut vars = Vec::new();
        let v = &mut vars;
        let patch_w = normal(
            v,
            "patch_embed.proj.weight".into(),
            &[dim, 3, patch, patch],
            0.02,
        )?;
        let patch_b = constant(v, "patch_embed.proj.bias".into(), dim, 0.0)?;
        let tokens = (img / patch) * (img / patch) + 1;
        let cls = normal(v, "cls_token".into(), &[1, 1, dim], 0.02)?;
        let pos = normal(v, "pos_embed".into(), &[1, tokens, dim], 0.02)?;
        let mut blocks = Vec::new();
        for i in 0..depth {
            let p = format!("blocks.{i}");
            blocks.push(Block {
                norm1: Norm::new(v, &format!("{p}.norm1"), dim)?,
                qkv: Lin::new(v, &format!("{p}.attn.qkv"), dim, 3 * dim)?,
                proj: Lin::new(v, &format!("{p}.attn.proj"), dim, dim)?,
                norm2: Norm::new(v, &format!("{p}.norm2"), dim)?,
                fc1: Lin::new(v, &format!("{p}.mlp.fc1"), dim, 4 * dim)?,
                fc2: Lin::new(v, &format!("{p}.mlp.fc2"), 4 * dim, dim)?,
                heads,
            });
        }
        let norm = Norm::new(v, "norm", dim)?;
        let head = Lin::new(v, "head", dim, classes)?;
        Ok(Self {
            patch_w,
            patch_b,
            patch,
            cls,
            pos,
            blocks,
            norm,
            head,
            vars,
        })
    }

    /// Images [B, 3, H, W] to logits [B, K].
    pub fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let b = x.dim(0)?;
        let p = conv2d(
            x,
            self.patch_w.as_tensor(),
            Some(self.patch_b.as_tensor()),
            self.patch,
            0,
            1,
            1,
        )?;
        let d = p.dim(1)?;
        let tokens = p.flatten_from(2)?.transpose(1, 2)?; // [B, N, D]
        let cls = self.cls.as_tensor().broadcast_as((b, 1, d))?;
        let mut t = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(self.pos.as_tensor())?;
        for blk in &self.blocks {
            t = blk.forward(&t)?;
        }
        let t = self.norm.forward(&t)?;
        let cls_out = t.narrow(D::Minus2, 0, 1)?.squeeze(1)?;
        self.head.forward(&cls_out)
    }
}
