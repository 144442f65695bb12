//! The attention's heads from the fused qkv projection and back, inside the transformer graph
//! node (`residual_branch`'s CUDA path).
//!
//! Composed, the qkv projection's bias add is a pass over the `[B, N, 3C]` result, the head
//! split three strided copies (the queries' one with the `hd^-1/2` scale) and, backward, the
//! three gradients are stacked (a copy), permuted back (a copy), the queries' scaled (a pass)
//! and summed over the rows for the bias gradient (a pass). Here the forward is one pass (read
//! the bias-free GEMM result, write `[3, B, heads, N, hd]`) and the backward one pass that
//! writes `[B*N, 3C]` with the bias gradient's column sums beside it.
//!
//! Values are rounded as the separate ops store them (`g + bias` in the activations' dtype,
//! then `q * scale` with the scale in that dtype), so they equal the composed ops' wherever the
//! scale is exact in it: every DeiT (head dim 64, scale 1/8). No op here has a backward of its
//! own: the graph node's backward calls them.

use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::Output;
use crate::linear::column_sums;
use crate::side_output::SideOutput;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The attention's shape: batch, tokens, heads, head dim.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Heads {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Elements of `[3, B, heads, N, hd]` (and of `[B*N, 3C]`).
    pub(crate) fn elems(&self) -> usize {
        3 * self.plane()
    }

    /// Elements of one of q, k, v: `[B, heads, N, hd]`.
    pub(crate) fn plane(&self) -> usize {
        self.batch * self.tokens * self.heads * self.head_dim
    }

    fn width(&self) -> usize {
        3 * self.heads * self.head_dim
    }

    /// The queries' scale, `hd^-1/2`.
    fn scale(&self) -> f32 {
        (self.head_dim as f64).powf(-0.5) as f32
    }

    /// Tokens, heads and head dim as the kernels' `int`, or an error naming `op`.
    #[cfg(feature = "cuda")]
    pub(crate) fn ints(&self, op: &str) -> Result<(i32, i32, i32)> {
        let int = |v: usize| {
            i32::try_from(v)
                .map_err(|_| candle_core::Error::Msg(format!("{op}: {v} exceeds the kernels' int")))
        };
        Ok((int(self.tokens)?, int(self.heads)?, int(self.head_dim)?))
    }

    /// The `[N, hd]` rows of `part` (0 q, 1 k, 2 v) of (image, head) pair `bh` in
    /// `[3, B, heads, N, hd]` (or of the only part, 0, in `[B, heads, N, hd]`).
    pub(crate) fn head_range(&self, part: usize, bh: usize) -> std::ops::Range<usize> {
        let rows = self.tokens * self.head_dim;
        let start = part * self.plane() + bh * rows;
        start..start + rows
    }

    /// The `hd` values of token `t` of (image, head) pair `bh` in the merged `[B, N, heads * hd]`.
    pub(crate) fn merged_range(&self, bh: usize, t: usize) -> std::ops::Range<usize> {
        let (b, h) = (bh / self.heads, bh % self.heads);
        let start = ((b * self.tokens + t) * self.heads + h) * self.head_dim;
        start..start + self.head_dim
    }

    /// Where column `j` of row `b * N + t` of the qkv result lands in `[3, B, heads, N, hd]`.
    fn index(&self, b: usize, t: usize, j: usize) -> usize {
        let c = self.heads * self.head_dim;
        let (part, h, d) = (j / c, j % c / self.head_dim, j % self.head_dim);
        (((part * self.batch + b) * self.heads + h) * self.tokens + t) * self.head_dim + d
    }
}

/// The shape of a qkv result `[B, N, 3C]` with `heads` heads, or an error naming the operand.
fn qkv_shape(g: &Shape, bias: &Shape, heads: usize) -> Result<Heads> {
    let (batch, tokens, width) = g.dims3().map_err(|_| {
        candle_core::Error::Msg(format!("split_qkv_heads: input {g:?} is not [B, N, 3C]"))
    })?;
    if heads == 0 || width % (3 * heads) != 0 || width == 0 {
        candle_core::bail!("split_qkv_heads: input width {width} is not 3 x {heads} heads");
    }
    if bias.dims() != [width] {
        candle_core::bail!("split_qkv_heads: bias {bias:?} is not [{width}]");
    }
    Ok(Heads {
        batch,
        tokens,
        heads,
        head_dim: width / 3 / heads,
    })
}

/// The shape of three `[B, heads, N, hd]` gradients, or an error naming the one that differs.
fn heads_shape(dq: &Shape, dk: &Shape, dv: &Shape) -> Result<Heads> {
    let (batch, heads, tokens, head_dim) = dq.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "merge_qkv_heads: query gradient {dq:?} is not [B, heads, N, hd]"
        ))
    })?;
    for (what, s) in [("key", dk), ("value", dv)] {
        if s != dq {
            candle_core::bail!(
                "merge_qkv_heads: {what} gradient {s:?} differs from the query's {dq:?}"
            );
        }
    }
    Ok(Heads {
        batch,
        tokens,
        heads,
        head_dim,
    })
}

/// `[3, B, heads, N, hd]`: q (scaled by `hd^-1/2`), k and v of `g + bias`, for the qkv
/// projection's bias-free result `g` (`[B, N, 3C]`) and its bias (`[3C]`, `g`'s dtype).
pub(crate) fn split_qkv_heads(g: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
    let shape = qkv_shape(g.shape(), bias.shape(), heads)?;
    if bias.dtype() != g.dtype() {
        candle_core::bail!(
            "split_qkv_heads: bias is {:?}, the input {:?}",
            bias.dtype(),
            g.dtype()
        );
    }
    g.contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &SplitOp { shape })
}

/// The gradients through [`split_qkv_heads`] from those of the scaled queries, the keys and the
/// values (`[B, heads, N, hd]` each): `(dg [B*N, 3C], dbias [3C])`, both in `dq`'s dtype (the
/// bias gradient accumulated in f32).
pub(crate) fn merge_qkv_heads(dq: &Tensor, dk: &Tensor, dv: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = heads_shape(dq.shape(), dk.shape(), dv.shape())?;
    if dk.dtype() != dq.dtype() || dv.dtype() != dq.dtype() {
        candle_core::bail!(
            "merge_qkv_heads: gradients differ in dtype: {:?}, {:?}, {:?}",
            dq.dtype(),
            dk.dtype(),
            dv.dtype()
        );
    }
    let op = MergeOp {
        shape,
        bias_grad: SideOutput::new("merge_qkv_heads bias gradient"),
    };
    let dg = dq
        .contiguous()?
        .apply_op3_no_bwd(&dk.contiguous()?, &dv.contiguous()?, &op)?;
    let db = op.bias_grad.take()?.to_dtype(dq.dtype())?;
    Ok((dg, db))
}

struct SplitOp {
    shape: Heads,
}

impl SplitOp {
    fn out_shape(&self) -> Shape {
        let h = self.shape;
        Shape::from((3, h.batch, h.heads, h.tokens, h.head_dim))
    }
}

impl CustomOp2 for SplitOp {
    fn name(&self) -> &'static str {
        "maxsup-split-qkv-heads"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = self.shape;
        let g = contiguous_f32(gs, gl, "split_qkv_heads input")?;
        let bias = contiguous_f32(bs, bl, "split_qkv_heads bias")?;
        let (c, width, scale) = (h.heads * h.head_dim, h.width(), h.scale());
        let mut out = Output::new(h.elems());
        // One task per (part, image, head) plane of `[N, hd]`.
        out.slots()
            .par_chunks_mut(h.tokens * h.head_dim)
            .enumerate()
            .for_each(|(p, plane)| {
                let (part, b, head) = (p / (h.batch * h.heads), p / h.heads % h.batch, p % h.heads);
                let col = part * c + head * h.head_dim;
                for (t, row) in plane.chunks_mut(h.head_dim).enumerate() {
                    let src = &g[(b * h.tokens + t) * width + col..][..h.head_dim];
                    for ((o, &v), &bv) in row.iter_mut().zip(src).zip(&bias[col..]) {
                        let v = v + bv;
                        o.write(if part == 0 { v * scale } else { v });
                    }
                }
            });
        // SAFETY: the planes cover the output and every element of each was written.
        let out = unsafe { out.assume_init() };
        Ok((CpuStorage::F32(out), self.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let h = self.shape;
        let out = crate::cuda::qkv_heads::qkv_heads_fwd((gs, gl), (bs, bl), h, h.scale())?;
        Ok((out, self.out_shape()))
    }
}

/// `(dq, dk, dv) -> dg`, with the bias gradient (f32) left in `bias_grad`.
struct MergeOp {
    shape: Heads,
    bias_grad: SideOutput,
}

impl MergeOp {
    fn out_shape(&self) -> Shape {
        let h = self.shape;
        Shape::from((h.batch * h.tokens, h.width()))
    }
}

impl CustomOp3 for MergeOp {
    fn name(&self) -> &'static str {
        "maxsup-merge-qkv-heads"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = self.shape;
        let parts = [
            contiguous_f32(qs, ql, "merge_qkv_heads query gradient")?,
            contiguous_f32(ks, kl, "merge_qkv_heads key gradient")?,
            contiguous_f32(vs, vl, "merge_qkv_heads value gradient")?,
        ];
        let (width, scale, plane) = (h.width(), h.scale(), h.plane());
        let mut dg = Output::new(h.elems());
        dg.slots()
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| {
                let (b, t) = (r / h.tokens, r % h.tokens);
                for (j, o) in row.iter_mut().enumerate() {
                    let i = h.index(b, t, j);
                    let v = parts[i / plane][i % plane];
                    o.write(if i < plane { v * scale } else { v });
                }
            });
        // SAFETY: the rows cover the output and every element of each was written.
        let dg = unsafe { dg.assume_init() };
        let db = column_sums(&dg, h.batch * h.tokens, width);
        self.bias_grad.put_cpu(db, width)?;
        Ok((CpuStorage::F32(dg), self.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let h = self.shape;
        let (dg, db) =
            crate::cuda::qkv_heads::qkv_heads_bwd((qs, ql), (ks, kl), (vs, vl), h, h.scale())?;
        self.bias_grad.put_cuda(db, h.width())?;
        Ok((dg, self.out_shape()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn seq(n: usize, scale: f32, shift: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * scale + shift)
            .collect()
    }

    /// The separate ops the fused ones replace, as the graph node ran them.
    fn composed_split(g: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, n, c3) = g.dims3()?;
        let hd = c3 / 3 / heads;
        let parts = g
            .broadcast_add(bias)?
            .reshape((b, n, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (parts.get(0)? * (hd as f64).powf(-0.5))?.contiguous()?;
        Tensor::stack(
            &[q, parts.get(1)?.contiguous()?, parts.get(2)?.contiguous()?],
            0,
        )
    }

    #[test]
    fn fused_head_split_and_merge_equal_the_separate_ops() -> Result<()> {
        let dev = Device::Cpu;
        // DeiT's head dim (an exact scale) and an odd one.
        for (b, n, heads, hd) in [(2usize, 5usize, 3usize, 64usize), (3, 4, 2, 3)] {
            let c3 = 3 * heads * hd;
            let g = Tensor::from_vec(seq(b * n * c3, 4.0, 0.0), (b, n, c3), &dev)?;
            let bias = Tensor::from_vec(seq(c3, 1.0, 0.2), c3, &dev)?;
            let got = split_qkv_heads(&g, &bias, heads)?;
            let want = composed_split(&g, &bias, heads)?;
            assert_eq!(got.dims(), want.dims());
            assert_eq!(
                got.flatten_all()?.to_vec1::<f32>()?,
                want.flatten_all()?.to_vec1::<f32>()?,
                "split, hd={hd}"
            );

            let shape = (b, heads, n, hd);
            let d = |s: f32| Tensor::from_vec(seq(b * heads * n * hd, s, 0.1), shape, &dev);
            let (dq, dk, dv) = (d(1.0)?, d(2.0)?, d(3.0)?);
            let (dg, db) = merge_qkv_heads(&dq, &dk, &dv)?;
            let want_dg = Tensor::stack(&[(&dq * (hd as f64).powf(-0.5))?, dk, dv], 0)?
                .permute((1, 3, 0, 2, 4))?
                .contiguous()?
                .reshape((b * n, c3))?;
            assert_eq!(
                dg.to_vec2::<f32>()?,
                want_dg.to_vec2::<f32>()?,
                "merge, hd={hd}"
            );
            assert_eq!(
                db.to_vec1::<f32>()?,
                crate::linear_bias::bias_grad(&want_dg)?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    #[test]
    fn shapes_that_are_not_heads_are_errors_naming_the_operand() -> Result<()> {
        let dev = Device::Cpu;
        let g = Tensor::zeros((2, 3, 12), DType::F32, &dev)?;
        let e = split_qkv_heads(&g, &Tensor::zeros(12, DType::F32, &dev)?, 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("width 12 is not 3 x 5 heads"), "{e}");
        let e = split_qkv_heads(&g, &Tensor::zeros(11, DType::F32, &dev)?, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bias") && e.contains("[12]"), "{e}");
        let q = Tensor::zeros((2, 2, 3, 2), DType::F32, &dev)?;
        let short = Tensor::zeros((2, 2, 2, 2), DType::F32, &dev)?;
        let e = merge_qkv_heads(&q, &q, &short).unwrap_err().to_string();
        assert!(e.contains("value gradient"), "{e}");
        Ok(())
    }
}
