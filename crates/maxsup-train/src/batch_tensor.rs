//! The one step from the loader's host batch to the model's input tensor.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use maxsup_data::{Batch, BatchImages};
use maxsup_ops::StagedUpload;

/// The images of `batch` as a `[B, 3, H, W]` tensor on `device`, in `dtype` (f32, or bf16 for a
/// mixed-precision run: cast on the device, after the copy). A batch of 8-bit pixels is copied
/// as bytes and normalized on the device, with the loader's arithmetic. `staging` queues the
/// copy from page-locked memory on CUDA (the training loop's); without it the copy is
/// `Tensor::from_slice`'s.
pub fn images_tensor(
    batch: &Batch,
    device: &Device,
    dtype: DType,
    staging: Option<&mut StagedUpload>,
) -> Result<Tensor> {
    let shape = batch.shape.as_slice();
    let x = match (&batch.images, staging) {
        (BatchImages::Normalized(values), Some(s)) => s.upload(values, shape, device)?,
        (BatchImages::Normalized(values), None) => Tensor::from_slice(values, shape, device)?,
        (BatchImages::Pixels { values, mean, std }, staging) => {
            let pixels = match staging {
                Some(s) => s.upload(values, shape, device)?,
                None => Tensor::from_slice(values, shape, device)?,
            };
            normalize_pixels(&pixels, *mean, *std)?
        }
    };
    Ok(if dtype == DType::F32 {
        x
    } else {
        x.to_dtype(dtype)?
    })
}

/// `(v / 255 - mean[c]) / std[c]` on `[B, 3, H, W]` u8 pixels, in f32: the same IEEE operations
/// as the loader's `normalize_into` (true divisions, not multiplications by reciprocals), so on
/// the CPU the result is bit-identical to the loader's normalized batch.
fn normalize_pixels(pixels: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Result<Tensor> {
    let device = pixels.device();
    let per_channel = |v: [f32; 3]| Tensor::from_slice(&v, (1, 3, 1, 1), device);
    let scale = Tensor::new(255f32, device)?;
    Ok(pixels
        .to_dtype(DType::F32)?
        .broadcast_div(&scale)?
        .broadcast_sub(&per_channel(mean)?)?
        .broadcast_div(&per_channel(std)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxsup_data::CIFAR10_MEAN;

    fn batch(images: BatchImages) -> Batch {
        Batch {
            images,
            shape: [2, 3, 4, 5],
            labels: vec![0, 1],
            soft_targets: None,
            num_classes: 10,
            indices: vec![0, 1],
        }
    }

    #[test]
    fn pixels_normalize_on_the_device_exactly_as_the_loader_does() {
        let values: Vec<u8> = (0..120).map(|i| (i * 37 % 256) as u8).collect();
        let std = [0.2470, 0.2435, 0.2616];
        let pixels = batch(BatchImages::Pixels {
            values,
            mean: CIFAR10_MEAN,
            std,
        });
        let expected = pixels.normalized_images().into_owned();
        let normalized = batch(BatchImages::Normalized(expected.clone()));
        let mut staging = StagedUpload::new();
        for b in [&pixels, &normalized] {
            for s in [None, Some(&mut staging)] {
                let x = images_tensor(b, &Device::Cpu, DType::F32, s).unwrap();
                assert_eq!(x.dims(), [2, 3, 4, 5]);
                let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let same = got
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "device normalization differs from the loader's");
            }
        }
        // Image 1 (values 60..120), channel 1 (its values 20..40), pixel 0: index 80.
        let v = (80 * 37 % 256) as f32;
        assert_eq!(expected[80], (v / 255.0 - CIFAR10_MEAN[1]) / std[1]);
        let half = images_tensor(&pixels, &Device::Cpu, DType::F16, None).unwrap();
        assert_eq!(half.dtype(), DType::F16);
    }
}
