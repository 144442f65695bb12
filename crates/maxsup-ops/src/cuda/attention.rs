//! Launcher of the fused attention forward (`kernels/attention.cuh`): one block of 8 warps per
//! (image, head) and 128 queries, with more dynamic shared memory than the 48 KiB a launch gets
//! by default (180.5 KiB for DeiT), which the kernel is allowed once per device (as is the
//! backward, `attention_bwd`).

use super::launch::{function, launch_kernel, output, view, wrap};
use crate::kernel_geometry::{
    attention_fwd as forward_geometry, AttentionGeometry, Launch, FUSED_ATTENTION_HEAD_DIMS,
};
use crate::qkv_heads::Heads;
use candle_core::cuda_backend::cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::{Layout, Result};
use half::bf16;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

fn kernel_name(head_dim: usize) -> String {
    format!("attention_fwd_d{head_dim}_bf16")
}

/// The dynamic shared memory a block may use on `dev` with the opt-in attribute, or 0 on a GPU
/// without bf16 tensor cores (compute capability below 8.0), where the kernel does not run.
/// Asked of the driver once per device.
fn shared_limit(dev: &CudaDevice) -> Result<usize> {
    static LIMITS: OnceLock<Mutex<HashMap<DeviceId, usize>>> = OnceLock::new();
    let limits = LIMITS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut limits = limits
        .lock()
        .map_err(|_| candle_core::Error::Msg("maxsup-ops: attention limits lock".into()))?;
    if let Some(&l) = limits.get(&dev.id()) {
        return Ok(l);
    }
    let l = ask_shared_limit(dev)?;
    limits.insert(dev.id(), l);
    Ok(l)
}

fn ask_shared_limit(dev: &CudaDevice) -> Result<usize> {
    let ctx = dev.cuda_stream().context().clone();
    let (major, _) = ctx
        .compute_capability()
        .map_err(wrap("compute capability"))?;
    if major < 8 {
        return Ok(0);
    }
    let optin = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(wrap("shared memory per block"))?;
    Ok(optin.max(0) as usize)
}

/// A fused attention kernel's launch for `shape` on `dev` by its `geometry`
/// (`kernel_geometry::attention_fwd` or `attention_bwd`), or `None` where it does not run (head
/// dim, shared memory, grid, a GPU before compute capability 8.0).
pub(crate) fn launch_config(
    dev: &CudaDevice,
    shape: Heads,
    geometry: AttentionGeometry,
) -> Result<Option<Launch>> {
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

/// Raises `name`'s dynamic shared memory limit on `dev` to the device's opt-in maximum, once.
fn allow_shared(dev: &CudaDevice, name: &str, limit: usize) -> Result<()> {
    static DONE: OnceLock<Mutex<HashSet<(DeviceId, String)>>> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(HashSet::new()));
    let mut done = done
        .lock()
        .map_err(|_| candle_core::Error::Msg("maxsup-ops: attention attribute lock".into()))?;
    if done.contains(&(dev.id(), name.to_string())) {
        return Ok(());
    }
    // cudarc's set_attribute calls the driver without making the context current (its launch
    // does): a thread that has not used the device yet would get CUDA_ERROR_INVALID_CONTEXT.
    dev.cuda_stream()
        .context()
        .bind_to_thread()
        .map_err(wrap("making the device's context current"))?;
    function(dev, name)?
        .set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            limit as i32,
        )
        .map_err(wrap("raising the attention kernel's shared memory"))?;
    done.insert((dev.id(), name.to_string()));
    Ok(())
}

/// The launch of the kernel `geometry` describes for `shape` on `dev`, with its shared memory
/// allowed, and the batch, tokens and heads as the kernel's `int`s; errors name `op`.
pub(super) fn prepare(
    dev: &CudaDevice,
    shape: Heads,
    geometry: AttentionGeometry,
    name: &str,
    op: &str,
) -> Result<(Launch, (i32, i32, i32))> {
    let cfg = launch_config(dev, shape, geometry)?.ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{op}: {shape:?} does not fit the fused kernel on this GPU"
        ))
    })?;
    let (n, h, _) = shape.ints(op)?;
    let b = i32::try_from(shape.batch).map_err(|_| {
        candle_core::Error::Msg(format!(
            "{op}: batch {} exceeds the kernel's int",
            shape.batch
        ))
    })?;
    allow_shared(dev, name, shared_limit(dev)?)?;
    Ok((cfg, (b, n, h)))
}

/// A contiguous bf16 view of an operand whose rows the kernels read as 16-byte vectors, or an
/// error naming `what` when it does not start on 16 bytes.
pub(super) fn rows_of_vectors<'a>(
    (s, l): (&'a CudaStorage, &Layout),
    what: &str,
) -> Result<CudaView<'a, bf16>> {
    if l.start_offset() % 8 != 0 {
        candle_core::bail!(
            "{what} starts at element {}, not 16-byte aligned",
            l.start_offset()
        );
    }
    view::<bf16>(s, l, what)
}

/// `(out [B, N, heads * D]` bf16, the rows' log-sum-exps `[B, heads, N]` f32`)` from
/// `[3, B, heads, N, D]` bf16.
pub(crate) fn attention_fwd(
    (s, l): (&CudaStorage, &Layout),
    shape: Heads,
) -> Result<(CudaStorage, CudaStorage)> {
    let dev = s.device.clone();
    let name = kernel_name(shape.head_dim);
    let (cfg, (b, n, h)) = prepare(&dev, shape, forward_geometry, &name, "attention_heads")?;
    let qkv = rows_of_vectors((s, l), "attention_heads qkv")?;
    let mut out = output::<bf16>(&dev, shape.plane())?;
    let mut lse = output::<f32>(&dev, shape.batch * shape.heads * shape.tokens)?;
    launch_kernel!(&dev, name, cfg, &qkv, &mut out, &mut lse, &b, &n, &h);
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        CudaStorage::wrap_cuda_slice(lse, dev),
    ))
}
