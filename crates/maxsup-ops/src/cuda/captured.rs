//! Borrowing the CUDA storage of a tensor an op captured (statistics, weights, a scale, a
//! residual gradient) inside its `cuda_fwd`, where candle hands over only the operands'.

use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result, Tensor};

/// `f` on `t`'s CUDA storage, or an error naming `what` (with its op) when `t` is elsewhere.
pub(crate) fn with_cuda<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cuda(s) => f(s, layout),
        _ => candle_core::bail!("{what} is not on the CUDA device of the input"),
    }
}

/// As [`with_cuda`] for a tensor that may be absent: `f` gets `None` then.
pub(crate) fn with_optional_cuda<R>(
    t: Option<&Tensor>,
    what: &str,
    f: impl FnOnce(Option<(&CudaStorage, &Layout)>) -> Result<R>,
) -> Result<R> {
    match t {
        Some(t) => with_cuda(t, what, |s, l| f(Some((s, l)))),
        None => f(None),
    }
}
