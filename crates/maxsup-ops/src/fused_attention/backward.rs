//! The backward of softmax(q k^T) v in the heads' layout as one op, for the transformer graph
//! node's backward on CUDA (where the forward ran with [`super::set_fused_attention`] on).
//!
//! Unfused, the node's attention backward copies the output gradient into heads, runs four
//! batched GEMMs (two of them writing `[B, heads, N, N]` results, dP and dS) and the softmax
//! backward between them. Here one tensor-core kernel (`kernels/attention.cuh`) recomputes the
//! probabilities from q, k and the forward's row log-sum-exps (`P = exp(q k^T - L)`) and keeps
//! S, P, dP and dS to 16x16 tiles in shared memory, taking the softmax backward's row sums from
//! the output (`sum_j P dP = sum_c dO O`); it writes dq, dk, dv
//! in `[3, B, heads, N, D]` for `merge_qkv_heads`. It applies where the forward kernel does
//! (bf16 on a GPU of compute capability 8.0 or later, head dim 32 or 64, the head's q, k, v
//! and output gradient within the device's shared memory), and the node falls back to the
//! unfused backward elsewhere. The CPU kernel (f32) computes the same in the same layout, so the
//! op is checked against the composed ops' gradients on any device.

use super::{applies, heads_of, lse_shape, out_shape, scores};
use crate::cpu::slices::contiguous_f32;
use crate::qkv_heads::Heads;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// dq, dk, dv (`[3, B, heads, N, D]`, dq for the scaled queries) from `qkv` (`[3, B, heads,
/// N, D]`), the forward's row log-sum-exps (`[B, heads, N]`, f32), the output and its gradient
/// (`[B, N, heads * D]`), when the fused kernel runs them; `None` otherwise (see the module doc).
pub(crate) fn attention_heads_backward(
    qkv: &Tensor,
    lse: &Tensor,
    out: &Tensor,
    d_out: &Tensor,
) -> Result<Option<Tensor>> {
    let shape = checked_shape(qkv, lse, out, d_out)?;
    if !applies(qkv, shape, crate::kernel_geometry::attention_bwd)? {
        return Ok(None);
    }
    run(qkv, lse, out, d_out, shape).map(Some)
}

/// The fused backward on any device (the CPU kernel takes f32).
#[cfg(test)]
pub(super) fn attention_heads_backward_fused(
    qkv: &Tensor,
    lse: &Tensor,
    out: &Tensor,
    d_out: &Tensor,
) -> Result<Tensor> {
    let shape = checked_shape(qkv, lse, out, d_out)?;
    run(qkv, lse, out, d_out, shape)
}

fn checked_shape(qkv: &Tensor, lse: &Tensor, out: &Tensor, d_out: &Tensor) -> Result<Heads> {
    let h = heads_of(qkv.shape())?;
    let want_lse = lse_shape(&h);
    if lse.shape() != &want_lse || lse.dtype() != candle_core::DType::F32 {
        candle_core::bail!(
            "attention_heads backward: log-sum-exps {:?} {:?} are not {want_lse:?} f32",
            lse.shape(),
            lse.dtype()
        );
    }
    let want_out = out_shape(&h);
    for (t, what) in [(out, "output"), (d_out, "output gradient")] {
        if t.shape() != &want_out {
            candle_core::bail!(
                "attention_heads backward: {what} {:?} is not {want_out:?}",
                t.shape()
            );
        }
    }
    let dtypes = [qkv.dtype(), out.dtype(), d_out.dtype()];
    if dtypes.iter().any(|&d| d != dtypes[0]) {
        candle_core::bail!("attention_heads backward: operands differ in dtype: {dtypes:?}");
    }
    Ok(h)
}

fn run(qkv: &Tensor, lse: &Tensor, out: &Tensor, d_out: &Tensor, shape: Heads) -> Result<Tensor> {
    let op = AttentionHeadsBackward {
        shape,
        out: out.contiguous()?,
    };
    qkv.contiguous()?
        .apply_op3_no_bwd(&lse.contiguous()?, &d_out.contiguous()?, &op)
}

/// Operands `(qkv, log-sum-exps, output gradient)`; the output, which only the row sums read,
/// is carried (candle's custom ops take at most three operands).
struct AttentionHeadsBackward {
    shape: Heads,
    out: Tensor,
}

impl CustomOp3 for AttentionHeadsBackward {
    fn name(&self) -> &'static str {
        "maxsup-attention-heads-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ls: &CpuStorage,
        ll: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "attention_heads backward qkv")?;
        let lse = contiguous_f32(ls, ll, "attention_heads backward log-sum-exps")?;
        let d_out = contiguous_f32(gs, gl, "attention_heads backward output gradient")?;
        let out = self.out.flatten_all()?.to_vec1::<f32>()?;
        let Heads {
            batch,
            heads,
            tokens: n,
            head_dim: d,
        } = self.shape;
        let shape = self.shape;
        // Per (image, head): its dq, dk, dv rows ([N][D] each).
        let per_head: Vec<[Vec<f32>; 3]> = (0..batch * heads)
            .into_par_iter()
            .map(|bh| {
                let part = |p: usize| &x[shape.head_range(p, bh)];
                let (q, k, v) = (part(0), part(1), part(2));
                let (mut dq, mut dk, mut dv) =
                    (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d]);
                let mut s = vec![0f32; n];
                for i in 0..n {
                    let g = &d_out[shape.merged_range(bh, i)];
                    let o = &out[shape.merged_range(bh, i)];
                    let delta: f32 = g.iter().zip(o).map(|(a, b)| a * b).sum();
                    scores(&q[i * d..(i + 1) * d], k, &mut s);
                    for j in 0..n {
                        let pij = (s[j] - lse[bh * n + i]).exp();
                        let dp: f32 = (0..d).map(|c| g[c] * v[j * d + c]).sum();
                        let ds = pij * (dp - delta);
                        for c in 0..d {
                            dq[i * d + c] += ds * k[j * d + c];
                            dk[j * d + c] += ds * q[i * d + c];
                            dv[j * d + c] += pij * g[c];
                        }
                    }
                }
                [dq, dk, dv]
            })
            .collect();
        let mut grads = vec![0f32; shape.elems()];
        for (bh, parts) in per_head.into_iter().enumerate() {
            for (p, rows) in parts.into_iter().enumerate() {
                grads[shape.head_range(p, bh)].copy_from_slice(&rows);
            }
        }
        Ok((CpuStorage::F32(grads), Shape::from(xl.shape().dims())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let grads = crate::cuda::captured::with_cuda(
            &self.out,
            "attention_heads backward: the output",
            |os, ol| {
                crate::cuda::attention_bwd::attention_bwd(
                    (xs, xl),
                    (ls, ll),
                    (os, ol),
                    (gs, gl),
                    self.shape,
                )
            },
        )?;
        Ok((grads, Shape::from(xl.shape().dims())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::attention_heads_fused;
    use super::*;
    use candle_core::{Device, Var};

    /// The composed forward's gradients at `[3, B, heads, N, D]` for the output gradient `g`
    /// (`ops::softmax`: candle's `softmax_last_dim` has no backward and would drop dq, dk).
    fn composed_grads(qkv: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (b, n, c) = {
            let d = qkv.dims();
            (d[1], d[3], d[2] * d[4])
        };
        let x = Var::from_tensor(qkv)?;
        let (q, k, v) = (x.get(0)?, x.get(1)?, x.get(2)?);
        let p = candle_nn::ops::softmax(&q.matmul(&k.t()?)?, candle_core::D::Minus1)?;
        let out = p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        let grads = (out * g)?.sum_all()?.backward()?;
        grads
            .get(x.as_tensor())
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("no gradient for qkv".into()))
    }

    #[test]
    fn cpu_kernel_matches_the_composed_gradients() -> Result<()> {
        for (b, h, n, d) in [(2usize, 3usize, 5usize, 4usize), (1, 2, 17, 8)] {
            let qkv = Tensor::randn(0f32, 1.0, (3, b, h, n, d), &Device::Cpu)?;
            let g = Tensor::randn(0f32, 1.0, (b, n, h * d), &Device::Cpu)?;
            let (out, lse) = attention_heads_fused(&qkv)?;
            let got = attention_heads_backward_fused(&qkv, &lse, &out, &g)?;
            let want = composed_grads(&qkv, &g)?;
            assert_eq!(got.dims(), want.dims());
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
            assert!(scale > 0.1 && err < 1e-5, "error {err} of {scale}");
        }
        Ok(())
    }

    #[test]
    fn operands_are_checked_and_the_cpu_kernel_takes_f32() -> Result<()> {
        let cpu = &Device::Cpu;
        let qkv = Tensor::zeros((3, 1, 2, 4, 8), candle_core::DType::F32, cpu)?;
        let lse = Tensor::zeros((1, 2, 4), candle_core::DType::F32, cpu)?;
        let o = Tensor::zeros((1, 4, 16), candle_core::DType::F32, cpu)?;
        assert!(attention_heads_backward(&qkv, &lse, &o, &o)?.is_some());
        let bf = |t: &Tensor| t.to_dtype(candle_core::DType::BF16);
        let none = attention_heads_backward(&bf(&qkv)?, &lse, &bf(&o)?, &bf(&o)?)?;
        assert!(none.is_none(), "bf16 on the CPU: the unfused backward");
        let bad_lse = Tensor::zeros((1, 2, 5), candle_core::DType::F32, cpu)?;
        let e = attention_heads_backward(&qkv, &bad_lse, &o, &o).unwrap_err();
        assert!(e.to_string().contains("log-sum-exps [1, 2, 5]"), "{e}");
        let e = attention_heads_backward(&qkv, &bf(&lse)?, &o, &o).unwrap_err();
        assert!(e.to_string().contains("BF16 are not [1, 2, 4] f32"), "{e}");
        let bad_g = Tensor::zeros((1, 4, 15), candle_core::DType::F32, cpu)?;
        let e = attention_heads_backward(&qkv, &lse, &o, &bad_g).unwrap_err();
        assert!(e.to_string().contains("output gradient [1, 4, 15]"), "{e}");
        let e = attention_heads_backward(&qkv, &lse, &o.to_dtype(candle_core::DType::BF16)?, &o)
            .unwrap_err();
        assert!(e.to_string().contains("differ in dtype"), "{e}");
        Ok(())
    }
}
