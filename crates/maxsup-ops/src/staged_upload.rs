//! The per-step host-to-device copy of a training batch, through page-locked staging buffers on
//! CUDA.
//!
//! `Tensor::from_slice` copies from pageable host memory: the driver stages that through its
//! own bounce buffer, and for a batch-sized copy the call returns only once the copy has run,
//! behind every kernel already queued on the stream, so the host waits for the GPU to finish
//! the previous step before it can queue the next. From page-locked memory the copy is queued
//! like a kernel and the call returns at once. Two buffers alternate; before one is refilled
//! the host waits for the copy out of it two batches ago (an event), which in a loop that
//! reads each step's report after queueing the next step has long finished.

use candle_core::{Device, Result, Shape, Tensor, WithDType};

/// Uploads successive batches to a device; reuse one per stream of batches.
#[derive(Default)]
pub struct StagedUpload {
    #[cfg(feature = "cuda")]
    staging: crate::cuda::pinned::PinnedRing,
}

/// The element types a batch is uploaded in: 8-bit pixels or normalized `f32`.
pub trait UploadDType: WithDType + staged_dtype::Sealed {}
impl UploadDType for u8 {}
impl UploadDType for f32 {}

mod staged_dtype {
    /// Sealed: the CUDA path needs cudarc's and candle's device traits, which the concrete
    /// types have.
    pub trait Sealed: Sized {
        #[cfg(feature = "cuda")]
        fn staged(
            upload: &mut super::StagedUpload,
            values: &[Self],
            shape: candle_core::Shape,
            dev: &candle_core::cuda_backend::CudaDevice,
        ) -> candle_core::Result<candle_core::Tensor>;
    }

    macro_rules! sealed {
        ($($t:ty),*) => {$(
            impl Sealed for $t {
                #[cfg(feature = "cuda")]
                fn staged(
                    upload: &mut super::StagedUpload,
                    values: &[Self],
                    shape: candle_core::Shape,
                    dev: &candle_core::cuda_backend::CudaDevice,
                ) -> candle_core::Result<candle_core::Tensor> {
                    upload.staging.upload(values, shape, dev)
                }
            }
        )*};
    }
    sealed!(u8, f32);
}

impl StagedUpload {
    pub fn new() -> StagedUpload {
        StagedUpload::default()
    }

    /// `values` as a contiguous tensor of `shape` on `device`. On the CPU this is
    /// `Tensor::from_slice`; on CUDA the values are copied into a page-locked buffer and the
    /// copy to the GPU is queued on the device's stream without waiting for it.
    pub fn upload<T: UploadDType, S: Into<Shape>>(
        &mut self,
        values: &[T],
        shape: S,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != values.len() {
            candle_core::bail!(
                "upload: {} values do not fill shape {shape:?}",
                values.len()
            );
        }
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(dev) => T::staged(self, values, shape, dev),
            _ => Tensor::from_slice(values, shape, device),
        }
    }
}
