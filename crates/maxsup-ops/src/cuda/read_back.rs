//! Page-locked buffers and events for [`ReadBack`](crate::ReadBack).

use candle_core::cuda_backend::cudarc::driver::{result, sys, DevicePtr};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Layout, Result};

/// A page-locked f64 buffer (cached: it is read by the CPU, unlike the write-combined staging
/// buffers of uploads) and the event recorded after the copy into it.
pub(crate) type Buffer = super::pinned::PinnedCopy<f64>;

fn driver_err(
    call: &'static str,
) -> impl FnOnce(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error {
    move |e| candle_core::Error::Cuda(format!("read back, {call}: {e}").into())
}

/// Queues the copy of the contiguous f64 storage `s` under `l` into a free buffer of `free`
/// (or a new one) and records its event; the buffer and the element count.
pub(crate) fn queue(
    dev: &CudaDevice,
    s: &CudaStorage,
    l: &Layout,
    free: &mut Vec<Buffer>,
) -> Result<(Buffer, usize)> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("read_back: the tensor must be contiguous");
    };
    let n = b - a;
    let stream = dev.cuda_stream();
    let mut buffer = match free.iter().position(|buf| buf.host.len() >= n) {
        Some(i) => free.swap_remove(i),
        None => {
            let ctx = stream.context();
            // SAFETY: the buffer is written by the copy below before it is read.
            let host = unsafe { ctx.alloc_pinned_with_flags::<f64>(n.max(8), 0) }
                .map_err(driver_err("cuMemHostAlloc"))?;
            let copied = ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(driver_err("cuEventCreate"))?;
            Buffer { host, copied }
        }
    };
    let src = s.as_cuda_slice::<f64>()?.slice(a..b);
    {
        let (src_ptr, _record_src) = src.device_ptr(&stream);
        let dst = buffer
            .host
            .as_mut_slice()
            .map_err(driver_err("page-locked buffer"))?;
        // SAFETY: `dst` holds at least `n` f64s, `src_ptr` addresses `n` f64s on the device;
        // the buffer is not read before `copied` is reached.
        unsafe { result::memcpy_dtoh_async(&mut dst[..n], src_ptr, stream.cu_stream()) }
            .map_err(driver_err("cuMemcpyDtoHAsync"))?;
    }
    buffer
        .copied
        .record(&stream)
        .map_err(driver_err("cuEventRecord"))?;
    Ok((buffer, n))
}

/// The first `n` values of `buffer`, once its copy has run.
pub(crate) fn read(buffer: &Buffer, n: usize) -> Result<Vec<f64>> {
    buffer
        .copied
        .synchronize()
        .map_err(driver_err("cuEventSynchronize"))?;
    let host = buffer
        .host
        .as_slice()
        .map_err(driver_err("page-locked buffer"))?;
    Ok(host[..n].to_vec())
}
