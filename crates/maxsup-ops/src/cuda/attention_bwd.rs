//! Launcher of the fused attention backward (`kernels/attention.cuh`): one block of 8 warps per
//! (image, head) with the head's q, k, v and output gradient in dynamic shared memory (140.6 KiB
//! for DeiT), allowed through the same opt-in as the forward.

use super::attention::{prepare, rows_of_vectors};
use super::launch::{f32_view, launch_kernel, output};
use crate::kernel_geometry::attention_bwd as geometry;
use crate::qkv_heads::Heads;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};
use half::bf16;

fn kernel_name(head_dim: usize) -> String {
    format!("attention_bwd_d{head_dim}_bf16")
}

/// dq, dk, dv as `[3, B, heads, N, D]` bf16 from qkv (`[3, B, heads, N, D]`), the rows'
/// log-sum-exps (`[B, heads, N]` f32), the output and its gradient (`[B, N, heads * D]`).
pub(crate) fn attention_bwd(
    qkv: (&CudaStorage, &Layout),
    lse: (&CudaStorage, &Layout),
    out: (&CudaStorage, &Layout),
    d_out: (&CudaStorage, &Layout),
    shape: Heads,
) -> Result<CudaStorage> {
    let dev = qkv.0.device.clone();
    let name = kernel_name(shape.head_dim);
    let op = "attention_heads backward";
    let (cfg, (b, n, h)) = prepare(&dev, shape, geometry, &name, op)?;
    let qkv = rows_of_vectors(qkv, "attention_heads backward qkv")?;
    let lse = f32_view(lse.0, lse.1, "attention_heads backward log-sum-exps")?;
    let out = rows_of_vectors(out, "attention_heads backward output")?;
    let d_out = rows_of_vectors(d_out, "attention_heads backward output gradient")?;
    let mut grads = output::<bf16>(&dev, shape.elems())?;
    launch_kernel!(&dev, name, cfg, &qkv, &lse, &out, &d_out, &mut grads, &b, &n, &h);
    Ok(CudaStorage::wrap_cuda_slice(grads, dev))
}
