//! Per-device settings for a training run on CUDA, and the TF32 switch.

use candle_core::cuda_backend::CudaDevice;
use candle_core::Result;
use std::sync::atomic::{AtomicBool, Ordering};

static TF32: AtomicBool = AtomicBool::new(false);

/// Lets f32 convolutions (cuDNN) and matmuls (cuBLAS) use TF32 tensor cores, as PyTorch's
/// `allow_tf32` flags do. Off by default: f32 results then match the CPU within 1e-4.
pub fn set_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
}

/// Whether TF32 is allowed for f32 work (see [`set_tf32`]).
pub fn tf32() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// Prepares `dev` for training-sized work: the stream-ordered memory pool keeps freed memory
/// instead of returning it to the driver at every synchronisation (its default release
/// threshold is 0, so every step would re-map its activations), and event tracking is turned off
/// (candle records two CUDA events per allocation to order work between streams; everything here
/// runs on the device's one stream).
///
/// Call once, right after opening the device and before creating tensors on it.
pub fn configure_device(dev: &CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread()
        .map_err(|e| candle_core::Error::Cuda(format!("binding the CUDA context: {e}").into()))?;
    let ordinal = ctx.ordinal() as i32;
    // SAFETY: plain driver calls on the device's own default pool, with a valid attribute value.
    unsafe {
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut device: sys::CUdevice = 0;
        sys::cuDeviceGet(&mut device, ordinal)
            .result()
            .map_err(|e| candle_core::Error::Cuda(format!("cuDeviceGet: {e}").into()))?;
        sys::cuDeviceGetDefaultMemPool(&mut pool, device)
            .result()
            .map_err(|e| {
                candle_core::Error::Cuda(format!("cuDeviceGetDefaultMemPool: {e}").into())
            })?;
        let mut threshold: u64 = u64::MAX;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut std::ffi::c_void,
        )
        .result()
        .map_err(|e| candle_core::Error::Cuda(format!("cuMemPoolSetAttribute: {e}").into()))?;
        dev.disable_event_tracking();
    }
    Ok(())
}
