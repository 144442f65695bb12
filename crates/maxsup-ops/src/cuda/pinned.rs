//! Page-locked buffers with the event of their last copy: the staging buffers of
//! [`StagedUpload`](crate::StagedUpload) and, through [`PinnedCopy`], those of
//! [`ReadBack`](crate::ReadBack).

use candle_core::cuda_backend::cudarc::driver::{
    result, CudaEvent, DevicePtrMut, DeviceRepr, PinnedHostSlice,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Result, Shape, Storage, Tensor};

/// Two page-locked byte buffers used in turn, grown to the largest batch seen.
#[derive(Default)]
pub(crate) struct PinnedRing {
    buffers: [Option<Staging>; 2],
    next: usize,
}

/// A page-locked buffer and the event recorded after the last copy into or out of it. Our own
/// event: cudarc records the buffer's built-in one only while it tracks events, which
/// [`configure_device`](crate::configure_device) turns off.
pub(crate) struct PinnedCopy<T> {
    pub(crate) host: PinnedHostSlice<T>,
    pub(crate) copied: CudaEvent,
}

/// An upload's staging buffer (write-combined bytes, copied out of).
type Staging = PinnedCopy<u8>;

impl<T> Drop for PinnedCopy<T> {
    /// Waits for the last copy to finish before the page-locked memory is freed: cudarc's
    /// `PinnedHostSlice` waits only on its built-in event, which these copies do not record,
    /// and freeing page-locked memory is not promised to wait for the DMA reading or writing it.
    fn drop(&mut self) {
        let _ = self.copied.synchronize();
    }
}

fn driver_err(
    call: &'static str,
) -> impl FnOnce(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error {
    move |e| candle_core::Error::Cuda(format!("staged upload, {call}: {e}").into())
}

impl PinnedRing {
    pub(crate) fn upload<T: DeviceRepr + CudaDType>(
        &mut self,
        values: &[T],
        shape: Shape,
        dev: &CudaDevice,
    ) -> Result<Tensor> {
        let bytes = std::mem::size_of_val(values);
        let stream = dev.cuda_stream();
        let slot = &mut self.buffers[self.next];
        self.next = 1 - self.next;
        if let Some(old) = slot.as_ref() {
            // The previous copy out of this buffer (two batches ago) must be done before it
            // is overwritten or freed.
            old.copied
                .synchronize()
                .map_err(driver_err("waiting for the staging buffer"))?;
        }
        if slot.as_ref().is_none_or(|b| b.host.len() < bytes) {
            *slot = None;
            let ctx = stream.context();
            // SAFETY: the buffer is written below before any copy reads it.
            let host = unsafe { ctx.alloc_pinned::<u8>(bytes.max(1)) }
                .map_err(driver_err("cuMemHostAlloc"))?;
            let copied = ctx.new_event(None).map_err(driver_err("cuEventCreate"))?;
            *slot = Some(Staging { host, copied });
        }
        let staging = slot.as_mut().expect("allocated above");
        let host = staging
            .host
            .as_mut_slice()
            .map_err(driver_err("staging buffer"))?;
        // SAFETY: `T` is a plain device type (u8 or f32 through the sealed `UploadDType`);
        // `bytes` is the slice's size in bytes.
        let src = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), bytes) };
        host[..bytes].copy_from_slice(src);
        // SAFETY: the destination is written in full by the copy before any kernel reads it.
        let mut dst = unsafe { stream.alloc::<T>(values.len()) }.map_err(driver_err("alloc"))?;
        {
            let (dst_ptr, _record_dst) = dst.device_ptr_mut(&stream);
            // SAFETY: `dst` holds `values.len()` elements of `T`, `bytes` bytes; the source is
            // page-locked and is not written again before `copied` is reached.
            unsafe { result::memcpy_htod_async(dst_ptr, &host[..bytes], stream.cu_stream()) }
                .map_err(driver_err("cuMemcpyHtoDAsync"))?;
        }
        staging
            .copied
            .record(&stream)
            .map_err(driver_err("cuEventRecord"))?;
        let storage = CudaStorage::wrap_cuda_slice(dst, dev.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            shape,
            BackpropOp::none(),
            false,
        ))
    }
}
