//! Borrowing an f32 CPU tensor as a contiguous slice, and splitting work over the rayon threads.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Device, Layout, Result, Storage, Tensor};

/// Runs `f` on the contiguous f32 data of `t` (copied to contiguous first when it is a strided view).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(contiguous_f32(cpu, layout, "tensor")?),
        _ => candle_core::bail!("maxsup-ops: expected a CPU tensor, got {:?}", t.device()),
    }
}

/// The f32 elements of a contiguous CPU storage under `layout`; errors name `what` otherwise.
pub fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("maxsup-ops: {what} must be f32, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("maxsup-ops: {what} must be contiguous (layout {layout:?})"),
    }
}

/// Wraps an owned f32 buffer as a (non-tracked) CPU tensor of `shape`.
pub fn tensor_from_vec(v: Vec<f32>, shape: impl Into<candle_core::Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Number of worker threads to split kernels over (rayon's pool, which honours RAYON_NUM_THREADS
/// like candle's own CPU backend).
pub fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Splits `0..n` into at most `parts` contiguous ranges of near-equal length.
pub fn split_range(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| (i * n / parts)..((i + 1) * n / parts))
        .filter(|r| !r.is_empty())
        .collect()
}
