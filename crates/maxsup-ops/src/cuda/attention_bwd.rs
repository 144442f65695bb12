//! Launcher of the fused attention backward (`kernels/attention.cuh`): one block of 8 warps per
//! (image, head) with the head's q, k, v and output gradient in dynamic shared memory (139.8 KiB
//! for DeiT), allowed through the same opt-in as the forward.

use super::attention::{allow_shared, shared_limit};
use super::launch::{launch_kernel, output, view};
use crate::kernel_geometry::{attention_bwd as geometry, Launch, FUSED_ATTENTION_HEAD_DIMS};
use crate::qkv_heads::Heads;
use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Layout, Result};
use half::bf16;

fn kernel_name(head_dim: usize) -> String {
    format!("attention_bwd_d{head_dim}_bf16")
}

/// The fused backward's launch for `shape` on `dev`, or `None` where it does not run (head dim,
/// shared memory, grid, a GPU before compute capability 8.0).
pub(crate) fn launch_config(dev: &CudaDevice, shape: Heads) -> Result<Option<Launch>> {
    if !FUSED_ATTENTION_HEAD_DIMS.contains(&shape.head_dim) {
        return Ok(None);
    }
    let limit = shared_limit(dev)?;
    Ok(geometry(
        shape.batch * shape.heads,
        shape.tokens,
        shape.head_dim,
        limit,
    ))
}

/// A contiguous bf16 view of an operand whose rows the kernel reads as 16-byte vectors.
fn aligned<'a>((s, l): (&'a CudaStorage, &Layout), what: &str) -> Result<CudaView<'a, bf16>> {
    if l.start_offset() % 8 != 0 {
        candle_core::bail!(
            "attention_heads backward: {what} starts at element {}, not 16-byte aligned",
            l.start_offset()
        );
    }
    view::<bf16>(s, l, what)
}

/// dq, dk, dv as `[3, B, heads, N, D]` bf16 from qkv (`[3, B, heads, N, D]`), the
/// probabilities (`[B, heads, N, N]`), the output and its gradient (`[B, N, heads * D]`).
pub(crate) fn attention_bwd(
    qkv: (&CudaStorage, &Layout),
    probs: (&CudaStorage, &Layout),
    out: (&CudaStorage, &Layout),
    d_out: (&CudaStorage, &Layout),
    shape: Heads,
) -> Result<CudaStorage> {
    let dev = qkv.0.device.clone();
    let cfg = launch_config(&dev, shape)?.ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "attention_heads backward: {shape:?} does not fit the fused kernel on this GPU"
        ))
    })?;
    let (n, h, _) = shape.ints("attention_heads backward")?;
    let b = i32::try_from(shape.batch).map_err(|_| {
        candle_core::Error::Msg(format!(
            "attention_heads backward: batch {} exceeds the kernel's int",
            shape.batch
        ))
    })?;
    let qkv = aligned(qkv, "qkv")?;
    let probs = view::<bf16>(probs.0, probs.1, "attention_heads backward probabilities")?;
    let out = aligned(out, "output")?;
    let d_out = aligned(d_out, "output gradient")?;
    let mut grads = output::<bf16>(&dev, shape.elems())?;
    let name = kernel_name(shape.head_dim);
    allow_shared(&dev, &name, shared_limit(&dev)?)?;
    launch_kernel!(&dev, name, cfg, &qkv, &probs, &out, &d_out, &mut grads, &b, &n, &h);
    Ok(CudaStorage::wrap_cuda_slice(grads, dev))
}
