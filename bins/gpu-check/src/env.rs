//! What the check ran on, and how long loading our kernels takes.

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::time::Instant;

pub fn run(device: &Device) -> Result<Value> {
    let Device::Cuda(cuda) = device else {
        anyhow::bail!("env: not a CUDA device")
    };
    let ctx = cuda.cuda_stream().context().clone();
    let (major, minor) = ctx.compute_capability()?;
    // First use of each kernel family loads the module (fatbin: SASS for the target, no JIT).
    let t = Instant::now();
    let x = Tensor::ones((4, 8, 8, 8), candle_core::DType::F32, device)?;
    let y = maxsup_ops::relu(&x)?;
    let _ = maxsup_ops::max_pool2d(&y, 3, 2, 1)?
        .sum_all()?
        .to_scalar::<f32>()?;
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let w = Tensor::ones((8, 8, 3, 3), candle_core::DType::F32, device)?;
    let _ = maxsup_ops::conv2d(&x, &w, None, 1, 1, 1, 1)?
        .sum_all()?
        .to_scalar::<f32>()?;
    let cudnn_first_s = t.elapsed().as_secs_f64();
    let mut driver = 0i32;
    // SAFETY: plain query into a local.
    unsafe { candle_core::cuda_backend::cudarc::driver::sys::cuDriverGetVersion(&mut driver) }
        .result()?;
    Ok(json!({
        "device": ctx.name()?,
        "compute_capability": format!("{major}.{minor}"),
        "memory_gb": ctx.total_mem()? as f64 / 1e9,
        "cuda_driver_api": driver,
        "cudnn": candle_core::cuda_backend::cudarc::cudnn::result::get_version(),
        "maxsup_kernels_first_use_s": load_s,
        "cudnn_first_conv_s": cudnn_first_s,
        "candle": "0.11.1",
        "cudarc": "0.19.10",
        "maxsup_rs": env!("CARGO_PKG_VERSION"),
    }))
}
