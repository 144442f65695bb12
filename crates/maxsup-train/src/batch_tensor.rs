//! The one step from the loader's host batch to the model's input tensor.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use maxsup_data::Batch;

/// The images of `batch` as a `[B, 3, H, W]` tensor on `device`, in `dtype` (the loader
/// produces f32; a bf16 run casts on the device, after the copy).
pub fn images_tensor(batch: &Batch, device: &Device, dtype: DType) -> Result<Tensor> {
    let x = Tensor::from_slice(&batch.images, batch.shape.as_slice(), device)?;
    Ok(if dtype == DType::F32 {
        x
    } else {
        x.to_dtype(dtype)?
    })
}
