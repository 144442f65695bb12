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

static CUDNN_BENCHMARK: AtomicBool = AtomicBool::new(false);

/// Chooses each convolution's algorithms by timing them (cuDNN's `cudnnFind*`, once per shape
/// and pass, at the first step), as PyTorch's `cudnn.benchmark = True`; off: cuDNN's heuristic.
/// A timing that fails falls back to the heuristic and is recorded
/// ([`cudnn_benchmark_fallbacks`]).
pub fn set_cudnn_benchmark(on: bool) {
    CUDNN_BENCHMARK.store(on, Ordering::Relaxed);
}

/// Whether convolution algorithms are chosen by timing (see [`set_cudnn_benchmark`]).
pub fn cudnn_benchmark() -> bool {
    CUDNN_BENCHMARK.load(Ordering::Relaxed)
}

/// Why timed algorithm choices fell back to the heuristic so far (distinct messages, at most 16).
pub fn cudnn_benchmark_fallbacks() -> Vec<String> {
    super::conv::find_fallbacks()
}

fn driver_err(
    call: &'static str,
) -> impl FnOnce(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error {
    move |e| candle_core::Error::Cuda(format!("{call}: {e}").into())
}

/// The stream-ordered memory pool candle allocates from on `dev` (the device's default pool).
fn default_pool(
    dev: &CudaDevice,
) -> Result<candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread()
        .map_err(driver_err("binding the CUDA context"))?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut device: sys::CUdevice = 0;
    // SAFETY: plain driver queries into locals, for the context's own device.
    unsafe {
        sys::cuDeviceGet(&mut device, ctx.ordinal() as i32)
            .result()
            .map_err(driver_err("cuDeviceGet"))?;
        sys::cuDeviceGetDefaultMemPool(&mut pool, device)
            .result()
            .map_err(driver_err("cuDeviceGetDefaultMemPool"))?;
    }
    Ok(pool)
}

/// One u64 attribute of `dev`'s pool, optionally set to `value` first.
fn pool_attribute(
    dev: &CudaDevice,
    attr: candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute,
    value: Option<u64>,
) -> Result<u64> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let pool = default_pool(dev)?;
    let mut v = value.unwrap_or(0);
    // SAFETY: u64-valued pool attributes with a valid out/in parameter.
    unsafe {
        if value.is_some() {
            sys::cuMemPoolSetAttribute(pool, attr, &mut v as *mut u64 as *mut std::ffi::c_void)
                .result()
                .map_err(driver_err("cuMemPoolSetAttribute"))?;
        }
        sys::cuMemPoolGetAttribute(pool, attr, &mut v as *mut u64 as *mut std::ffi::c_void)
            .result()
            .map_err(driver_err("cuMemPoolGetAttribute"))?;
    }
    Ok(v)
}

/// The most device memory in use at once (bytes) since the last call with `reset` (which starts
/// a new measurement), from the memory pool's high-water mark.
pub fn peak_memory(dev: &CudaDevice, reset: bool) -> Result<u64> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
    pool_attribute(dev, CU_MEMPOOL_ATTR_USED_MEM_HIGH, reset.then_some(0))
}

/// Prepares `dev` for training-sized work: the stream-ordered memory pool keeps freed memory
/// instead of returning it to the driver at every synchronisation (its default release
/// threshold is 0, so every step would re-map its activations), and event tracking is turned off
/// (candle records two CUDA events per allocation to order work between streams; everything here
/// runs on the device's one stream).
///
/// Call once, right after opening the device and before creating tensors on it.
pub fn configure_device(dev: &CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
    pool_attribute(dev, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, Some(u64::MAX))?;
    // SAFETY: every tensor of a run lives on the device's one stream (see above).
    unsafe { dev.disable_event_tracking() };
    Ok(())
}
