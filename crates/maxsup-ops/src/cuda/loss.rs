//! Launchers of the fused softmax-family loss kernels (`softmax_loss_*` in ops.cu).

use super::launch::{launch_kernel, output, view};
use crate::kernel_geometry::{loss_mean, loss_rows};
use crate::softmax_loss::LossTerms;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{DType, Layout, Result};

// SAFETY: `LossTerms` is `#[repr(C)]` with four f64s, as ops.cu's struct.
unsafe impl DeviceRepr for LossTerms {}

/// The operands of a launch: the device, B, K, the logits and the uploaded targets.
type Operands<'a> = (CudaDevice, usize, usize, CudaView<'a, f32>, CudaSlice<u32>);

/// Checks the logits (`[B, K]` f32, contiguous) against `targets` and uploads the targets
/// (B u32s: a copy small enough to be staged without waiting for the stream).
fn prepare<'a>(s: &'a CudaStorage, l: &Layout, targets: &[u32]) -> Result<Operands<'a>> {
    let (b, k) = l.shape().dims2()?;
    if s.dtype() != DType::F32 {
        candle_core::bail!("fused loss: CUDA logits must be f32, got {:?}", s.dtype());
    }
    if targets.len() != b || b == 0 || k == 0 || k > i32::MAX as usize {
        candle_core::bail!(
            "fused loss: {} targets for logits of shape {:?}",
            targets.len(),
            l.shape()
        );
    }
    if let Some(&bad) = targets.iter().find(|&&y| y as usize >= k) {
        candle_core::bail!("fused loss: target {bad} is out of range for {k} classes");
    }
    let z = view::<f32>(s, l, "fused loss logits")?;
    let dev = s.device.clone();
    let y = dev.clone_htod(targets)?;
    Ok((dev, b, k, z, y))
}

/// The batch-mean loss (a scalar f32 storage) on `[B, K]` f32 logits.
pub fn softmax_loss_forward(
    s: &CudaStorage,
    l: &Layout,
    targets: &[u32],
    terms: LossTerms,
) -> Result<CudaStorage> {
    let (dev, b, k, z, y) = prepare(s, l, targets)?;
    let mut rows = output::<f64>(&dev, b)?;
    let (k, b32) = (k as i32, b as i32);
    launch_kernel!(
        &dev,
        "softmax_loss_rows_f32",
        loss_rows(b),
        &z,
        &y,
        &terms,
        &mut rows,
        &k
    );
    let mut out = output::<f32>(&dev, 1)?;
    launch_kernel!(
        &dev,
        "softmax_loss_mean_f32",
        loss_mean(),
        &rows,
        &mut out,
        &b32
    );
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// The loss's gradient with respect to the logits (`[B, K]` f32) for an upstream gradient of 1.
pub fn softmax_loss_gradient(
    s: &CudaStorage,
    l: &Layout,
    targets: &[u32],
    terms: LossTerms,
) -> Result<CudaStorage> {
    let (dev, b, k, z, y) = prepare(s, l, targets)?;
    let mut g = output::<f32>(&dev, b * k)?;
    let (k32, inv_b) = (k as i32, 1.0 / b as f64);
    launch_kernel!(
        &dev,
        "softmax_loss_grad_f32",
        loss_rows(b),
        &z,
        &y,
        &terms,
        &mut g,
        &k32,
        &inv_b
    );
    Ok(CudaStorage::wrap_cuda_slice(g, dev))
}
