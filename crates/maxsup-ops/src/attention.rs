//! Multi-head self-attention straight from the fused `qkv` projection, as one custom op:
//! `[B, N, 3C] -> [B, N, C]`, `softmax(q kᵀ / sqrt(hd)) v` per head, heads concatenated.
//!
//! Why one op: composed from tensor ops, attention is a reshape/permute, three contiguous copies,
//! a scale, two batched products, a softmax and a transpose back, and every one of those nodes
//! makes candle's backward allocate a zero tensor and add into it. Here q, k and v are read in
//! place (strided views of the qkv rows), the output is written token-major, and the backward
//! writes the three gradients straight into one `[B, N, 3C]` buffer. The attention matrix is
//! recomputed in the backward instead of stored (as flash attention does): it is `N x N` per head,
//! cheap next to the projections, and nothing `B x H x N x N` stays alive between passes.

use crate::cpu::exp::softmax_rows;
use crate::cpu::gemm::{matmul as gemm, matmul_into, Mat};
use crate::cpu::slices::{contiguous_f32, tensor_from_vec, with_f32};
use crate::cpu::uninit::{ensure_len, Output};
use crate::dispatch::cpu_only;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

struct AttentionOp {
    heads: usize,
}

/// Shape bookkeeping for one `[B, N, 3C]` input.
#[derive(Clone, Copy)]
pub(crate) struct Geom {
    n: usize,
    c: usize,
    hd: usize,
    heads: usize,
    scale: f32,
}

impl Geom {
    pub(crate) fn new(dims: &[usize], heads: usize) -> Result<(usize, Self)> {
        let &[b, n, c3] = dims else {
            candle_core::bail!("attention: qkv must be [B, N, 3C], got {dims:?}");
        };
        if heads == 0 || c3 % (3 * heads) != 0 {
            candle_core::bail!(
                "attention: last dim {c3} of qkv is not 3 x heads ({heads}) x head_dim"
            );
        }
        let c = c3 / 3;
        let hd = c / heads;
        Ok((
            b,
            Self {
                n,
                c,
                hd,
                heads,
                scale: (hd as f32).powf(-0.5),
            },
        ))
    }

    /// `part` (0 = q, 1 = k, 2 = v) of head `h` inside one image's qkv rows: N x hd, row stride 3C.
    fn part<'a>(&self, qkv: &'a [f32], part: usize, h: usize) -> Mat<'a> {
        Mat {
            data: &qkv[part * self.c + h * self.hd..],
            rows: self.n,
            cols: self.hd,
            rs: 3 * self.c,
            cs: 1,
        }
    }

    /// `p = softmax(scale * q kᵀ)` for head `h` of one image (N x N, row-major).
    fn probabilities(&self, qkv: &[f32], h: usize, p: &mut [f32]) {
        let n = self.n;
        gemm(
            p,
            n,
            self.part(qkv, 0, h),
            self.part(qkv, 1, h).t(),
            false,
            1,
        );
        softmax_rows(p, n, self.scale);
    }
}

/// The heads' outputs `[B, N, C]` of `qkv` (`[B, N, 3C]`, whole images) into `out`: writes all
/// of it (per image, each head's N x hd product fills its hd columns of every row).
pub(crate) fn forward_slices(g: &Geom, qkv: &[f32], out: &mut [MaybeUninit<f32>]) {
    let (n, c) = (g.n, g.c);
    out.par_chunks_mut(n * c)
        .zip(qkv.par_chunks(n * 3 * c))
        .for_each(|(ob, qkv)| {
            let mut p = vec![0f32; n * n];
            for h in 0..g.heads {
                g.probabilities(qkv, h, &mut p);
                matmul_into(
                    &mut ob[h * g.hd..],
                    c,
                    Mat::row_major(&p, n, n),
                    g.part(qkv, 2, h),
                    1,
                );
            }
        });
}

/// The gradient `[B, N, 3C]` of `qkv` given the output gradient `dy` (`[B, N, C]`) into `dx`:
/// writes all of it (per image and head, dQ, dK and dV fill their hd columns of every row).
pub(crate) fn backward_slices(g: &Geom, qkv: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    let (n, c) = (g.n, g.c);
    dx.par_chunks_mut(n * 3 * c)
        .zip(qkv.par_chunks(n * 3 * c).zip(dy.par_chunks(n * c)))
        .for_each(|(dxb, (qkv, dyb))| {
            let (mut p, mut dp) = (vec![0f32; n * n], vec![0f32; n * n]);
            for h in 0..g.heads {
                g.probabilities(qkv, h, &mut p);
                let pm = Mat::row_major(&p, n, n);
                let dyh = Mat {
                    data: &dyb[h * g.hd..],
                    rows: n,
                    cols: g.hd,
                    rs: c,
                    cs: 1,
                };
                // dV = Pᵀ dO
                matmul_into(&mut dxb[2 * c + h * g.hd..], 3 * c, pm.t(), dyh, 1);
                // dP = dO Vᵀ, then dS = scale * P ⊙ (dP - rowsum(dP ⊙ P))
                gemm(&mut dp, n, dyh, g.part(qkv, 2, h).t(), false, 1);
                for (dr, pr) in dp.chunks_mut(n).zip(p.chunks(n)) {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (d, &pv) in dr.iter_mut().zip(pr) {
                        *d = g.scale * pv * (*d - dot);
                    }
                }
                let ds = Mat::row_major(&dp, n, n);
                // dQ = dS K, dK = dSᵀ Q
                matmul_into(&mut dxb[h * g.hd..], 3 * c, ds, g.part(qkv, 1, h), 1);
                matmul_into(
                    &mut dxb[c + h * g.hd..],
                    3 * c,
                    ds.t(),
                    g.part(qkv, 0, h),
                    1,
                );
            }
        });
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "maxsup-attention-qkv"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "attention qkv")?;
        let (b, g) = Geom::new(l.dims(), self.heads)?;
        let (n, c) = (g.n, g.c);
        let mut out = Output::new(b * n * c);
        forward_slices(&g, x, out.slots());
        // SAFETY: `forward_slices` writes all b x n x c elements.
        let out = unsafe { out.assume_init() };
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (b, g) = Geom::new(x.dims(), self.heads)?;
        let (n, c) = (g.n, g.c);
        let dx = with_f32(x, |xv| {
            with_f32(dy, |gv| {
                ensure_len("attention output gradient", gv.len(), b * n * c)?;
                let mut dx = Output::new(b * n * 3 * c);
                backward_slices(&g, xv, gv, dx.slots());
                // SAFETY: `backward_slices` writes all b x n x 3c elements.
                Ok(unsafe { dx.assume_init() })
            })
        })?;
        Ok(Some(tensor_from_vec(dx, x.shape())?))
    }
}

/// Multi-head self-attention from a fused projection `qkv` `[B, N, 3C]` laid out as timm's
/// `Attention.qkv` output (`[q heads | k heads | v heads]` along the last dim): returns the heads'
/// outputs concatenated, `[B, N, C]`, ready for the output projection. Scale `head_dim^-0.5`.
///
/// f32 on CPU runs the fused custom op; elsewhere (CUDA) the heads are split with tensor ops, the
/// two products are batched GEMMs (cuBLAS) and the softmax is the fused [`crate::softmax_last_dim`].
pub fn attention_qkv(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    Geom::new(qkv.dims(), heads)?;
    if !cpu_only(&[qkv]) {
        return composed(qkv, heads, crate::softmax_last_dim);
    }
    qkv.contiguous()?.apply_op1(AttentionOp { heads })
}

/// [`attention_qkv`] composed from candle tensor ops only (the reference).
pub fn attention_qkv_composed(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    composed(qkv, heads, crate::reference::softmax_last_dim)
}

fn composed(qkv: &Tensor, heads: usize, softmax: fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, n, c3) = qkv.dims3()?;
    let c = c3 / 3;
    let hd = c / heads;
    let parts = qkv
        .reshape((b, n, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    let q = (parts.get(0)? * (hd as f64).powf(-0.5))?.contiguous()?;
    let k = parts.get(1)?.contiguous()?;
    let v = parts.get(2)?.contiguous()?;
    // k^T as a transposed view: the GEMM reads it in place.
    let attn = softmax(&q.matmul(&k.t()?)?)?;
    attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))
}
