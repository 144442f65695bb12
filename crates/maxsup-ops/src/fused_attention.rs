//! softmax(q k^T) v from the heads' layout `[3, B, heads, N, D]` (what `split_qkv_heads`
//! writes, q scaled) as one op forward and one backward ([`attention_heads_backward`]), inside
//! the transformer graph node on CUDA.
//!
//! Unfused, the node's attention forward is a batched GEMM writing the `[B, heads, N, N]`
//! scores, the softmax kernel reading them and writing the probabilities, a second batched GEMM
//! reading those, and a copy merging the heads into `[B, N, C]`: four passes over the scores'
//! size plus the copy. On CUDA with bf16 activations this op is one tensor-core kernel
//! (`kernels/attention.cuh`) that keeps the scores and probabilities in shared memory, writes
//! the output merged and stores each query row's log-sum-exp (f32 `[B, heads, N]`), from which
//! the backward (`backward.rs`: one kernel too) recomputes the probabilities, as FlashAttention
//! does: for DeiT-S at batch 256, 1.2 MiB per block where the probabilities take 114 MiB. Both are
//! off by default until the GPU check's DeiT rows show them faster ([`set_fused_attention`]);
//! where they do not apply (f32, a head dim other than 32 or 64, too many tokens for the
//! device's shared memory, a GPU before compute capability 8.0) the node runs the unfused ops.
//!
//! The CPU kernels (f32) compute the same things in the same layouts, so the ops are checked
//! against the composed ops on any device.

mod backward;
pub(crate) use backward::attention_heads_backward;

use crate::cpu::slices::contiguous_f32;
use crate::qkv_heads::Heads;
use crate::side_output::SideOutput;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

static FUSED_ATTENTION: AtomicBool = AtomicBool::new(false);

/// Runs DeiT's attention on CUDA as one tensor-core kernel forward and one backward (bf16
/// activations, head dim 32 or 64) instead of batched GEMMs around the softmax and its
/// backward. Read when the forward runs (its backward follows that choice). Off by default.
pub fn set_fused_attention(on: bool) {
    FUSED_ATTENTION.store(on, Ordering::Relaxed);
}

/// Whether the fused attention is on (see [`set_fused_attention`]).
pub fn fused_attention() -> bool {
    FUSED_ATTENTION.load(Ordering::Relaxed)
}

/// The attention's shape from the heads' layout `[3, B, heads, N, D]`.
fn heads_of(qkv: &Shape) -> Result<Heads> {
    match *qkv.dims() {
        [3, batch, heads, tokens, head_dim] if batch * heads * tokens * head_dim > 0 => Ok(Heads {
            batch,
            tokens,
            heads,
            head_dim,
        }),
        _ => candle_core::bail!("attention_heads: qkv {qkv:?} is not [3, B, heads, N, D]"),
    }
}

fn out_shape(h: &Heads) -> Shape {
    Shape::from((h.batch, h.tokens, h.heads * h.head_dim))
}

fn lse_shape(h: &Heads) -> Shape {
    Shape::from((h.batch, h.heads, h.tokens))
}

/// `(softmax(q k^T) v` as `[B, N, heads * D]`, each row's `log(sum_j exp(q_i k_j))` as `[B,
/// heads, N]` f32) from `qkv` (`[3, B, heads, N, D]`, q scaled), when the fused op applies to
/// `qkv` (see the module doc); `None` otherwise, and always when [`set_fused_attention`] is off.
pub(crate) fn attention_heads(qkv: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    if !fused_attention() {
        return Ok(None);
    }
    let shape = heads_of(qkv.shape())?;
    if !applies(qkv, shape, crate::kernel_geometry::attention_fwd)? {
        return Ok(None);
    }
    run(qkv, shape).map(Some)
}

/// The fused op on any device, whatever the setting (the CPU kernel takes f32).
#[cfg(test)]
fn attention_heads_fused(qkv: &Tensor) -> Result<(Tensor, Tensor)> {
    run(qkv, heads_of(qkv.shape())?)
}

fn run(qkv: &Tensor, shape: Heads) -> Result<(Tensor, Tensor)> {
    let op = AttentionHeads {
        shape,
        lse: SideOutput::new("attention_heads log-sum-exps"),
    };
    let out = qkv.contiguous()?.apply_op1_no_bwd(&op)?;
    Ok((out, op.lse.take()?))
}

/// Whether a fused attention kernel with launch shape `geometry` (`kernel_geometry::attention_fwd`
/// or `attention_bwd`) runs `qkv`: bf16 on a GPU it fits, or f32 on the CPU (not a training
/// path there, which runs the whole branch as one CPU kernel: it lets the graph node's fused
/// path be tested on any machine, through `residual_attention_graph`).
fn applies(
    qkv: &Tensor,
    shape: Heads,
    geometry: crate::kernel_geometry::AttentionGeometry,
) -> Result<bool> {
    match qkv.device() {
        candle_core::Device::Cpu => Ok(qkv.dtype() == candle_core::DType::F32),
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(dev) if qkv.dtype() == candle_core::DType::BF16 => {
            Ok(crate::cuda::attention::launch_config(dev, shape, geometry)?.is_some())
        }
        _ => {
            let _ = (shape, geometry);
            Ok(false)
        }
    }
}

/// `row[j] = q_i k_j` for one query `q_i` (`[D]`) and a head's keys `k` (`[N][D]`): the CPU
/// kernels' scores, forward and backward alike.
fn scores(q_i: &[f32], k: &[f32], row: &mut [f32]) {
    let d = q_i.len();
    for (j, s) in row.iter_mut().enumerate() {
        *s = q_i
            .iter()
            .zip(&k[j * d..(j + 1) * d])
            .map(|(a, b)| a * b)
            .sum();
    }
}

struct AttentionHeads {
    shape: Heads,
    /// The rows' log-sum-exps, f32 whatever the activations' dtype.
    lse: SideOutput,
}

impl CustomOp1 for AttentionHeads {
    fn name(&self) -> &'static str {
        "maxsup-attention-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "attention_heads qkv")?;
        let Heads {
            batch,
            heads,
            tokens: n,
            head_dim: d,
        } = self.shape;
        let shape = self.shape;
        // Per (image, head): its rows' log-sum-exps and [N][D] output rows.
        let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..batch * heads)
            .into_par_iter()
            .map(|bh| {
                let part = |p: usize| &x[shape.head_range(p, bh)];
                let (q, k, v) = (part(0), part(1), part(2));
                let mut lse = vec![0f32; n];
                let mut o = vec![0f32; n * d];
                let mut row = vec![0f32; n];
                for i in 0..n {
                    scores(&q[i * d..(i + 1) * d], k, &mut row);
                    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let z: f32 = row.iter().map(|s| (s - m).exp()).sum();
                    lse[i] = m + z.ln();
                    for (j, s) in row.iter().enumerate() {
                        let pj = (s - m).exp() / z;
                        for c in 0..d {
                            o[i * d + c] += pj * v[j * d + c];
                        }
                    }
                }
                (lse, o)
            })
            .collect();
        let mut lse = Vec::with_capacity(batch * heads * n);
        let mut out = vec![0f32; shape.plane()];
        for (bh, (l, o)) in per_head.into_iter().enumerate() {
            lse.extend_from_slice(&l);
            for t in 0..n {
                out[shape.merged_range(bh, t)].copy_from_slice(&o[t * d..(t + 1) * d]);
            }
        }
        self.lse.put_cpu(lse, lse_shape(&self.shape))?;
        Ok((CpuStorage::F32(out), out_shape(&self.shape)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (out, lse) = crate::cuda::attention::attention_fwd((s, l), self.shape)?;
        self.lse.put_cuda(lse, lse_shape(&self.shape))?;
        Ok((out, out_shape(&self.shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The composed ops the graph node runs unfused, and the rows' log-sum-exps.
    fn composed(qkv: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, n, c) = {
            let d = qkv.dims();
            (d[1], d[3], d[2] * d[4])
        };
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let s = q.matmul(&k.t()?)?;
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        let lse = s.exp()?.sum(candle_core::D::Minus1)?.log()?;
        let out = p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        Ok((out, lse))
    }

    #[test]
    fn cpu_kernel_matches_the_composed_ops() -> Result<()> {
        for (b, h, n, d) in [(2usize, 3usize, 5usize, 4usize), (1, 2, 17, 8)] {
            let qkv = Tensor::randn(0f32, 1.0, (3, b, h, n, d), &Device::Cpu)?;
            let (out, lse) = attention_heads_fused(&qkv)?;
            let (want_out, want_lse) = composed(&qkv)?;
            assert_eq!(lse.dtype(), candle_core::DType::F32);
            for (got, want, what) in [(&out, &want_out, "output"), (&lse, &want_lse, "lse")] {
                assert_eq!(got.dims(), want.dims(), "{what}");
                let err = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err < 1e-5, "{what}: max error {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn the_setting_is_off_by_default_and_the_shape_is_checked() -> Result<()> {
        let qkv = Tensor::zeros((3, 1, 1, 4, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert!(attention_heads(&qkv)?.is_none(), "off by default");
        let bad = Tensor::zeros((2, 1, 1, 4, 8), candle_core::DType::F32, &Device::Cpu)?;
        let e = attention_heads_fused(&bad).unwrap_err().to_string();
        assert!(e.contains("is not [3, B, heads, N, D]"), "{e}");
        Ok(())
    }
}
