//! The one place that decides how an op runs: its fused custom op (CPU kernels for f32 on the
//! CPU; CUDA kernels for f32 or bf16 on a GPU when built with `cuda`) or the composed
//! [`crate::reference`] implementation for anything else (other dtypes, mixed devices).

use candle_core::{DType, Device, Tensor};

/// True when the fused op applies: `data` are the tensors that carry the op's element type
/// (activations, conv weights), `params` the f32 per-channel tensors (norm weights, biases).
pub(crate) fn fused(data: &[&Tensor], params: &[&Tensor]) -> bool {
    let Some(first) = data.first() else {
        return false;
    };
    let all = || data.iter().chain(params.iter());
    let params_f32 = params.iter().all(|t| t.dtype() == DType::F32);
    let same_dtype = data.iter().all(|t| t.dtype() == first.dtype());
    match first.device() {
        Device::Cpu => {
            first.dtype() == DType::F32
                && same_dtype
                && params_f32
                && all().all(|t| t.device().is_cpu())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            matches!(first.dtype(), DType::F32 | DType::BF16)
                && same_dtype
                && params_f32
                && all().all(|t| t.device().same_device(first.device()))
        }
        _ => false,
    }
}

/// True when an op whose fused kernels exist for the CPU only applies (f32 tensors on the CPU);
/// elsewhere it runs composed candle ops (on CUDA: cuBLAS GEMMs and the fused softmax).
pub(crate) fn cpu_only(tensors: &[&Tensor]) -> bool {
    tensors.first().is_some_and(|t| t.device().is_cpu()) && fused(tensors, &[])
}

/// Splits a packed 1-D gradient buffer (an op's backward that returns several same-dtype
/// gradients as one tensor) into tensors of the given shapes, in order; `None` shapes get no
/// tensor and take no space.
///
/// The first part present is a view of the buffer (it is the activation-sized input gradient);
/// the later ones, the small parameter gradients, are copied out: as views they would keep the
/// whole buffer alive until the optimizer step, i.e. every layer's input gradient at once.
/// (`force_contiguous`, not `copy`: candle's `copy` clones the whole storage under the view's
/// layout, which keeps, and copies, the buffer all the same.)
pub(crate) fn unpack(
    packed: &Tensor,
    shapes: &[Option<&candle_core::Shape>],
) -> candle_core::Result<Vec<Option<Tensor>>> {
    let mut at = 0;
    shapes
        .iter()
        .map(|s| match s {
            None => Ok(None),
            Some(s) => {
                let n = s.elem_count();
                let view = packed.narrow(0, at, n)?.reshape(*s)?;
                let t = if at == 0 {
                    view
                } else {
                    view.force_contiguous()?
                };
                at += n;
                Ok(Some(t))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_f32_is_fused_and_other_dtypes_are_not() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let h = Tensor::zeros((2, 3), DType::F16, &Device::Cpu).unwrap();
        let w = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        assert!(fused(&[&x], &[&w]));
        assert!(
            !fused(&[&h], &[&w]),
            "f16 on the CPU runs the composed reference"
        );
        assert!(!fused(&[&x, &h], &[]), "mixed dtypes");
        assert!(
            !fused(&[&x], &[&w.to_dtype(DType::F16).unwrap()]),
            "params must be f32"
        );
        assert!(!fused(&[], &[&w]));
    }

    #[test]
    fn unpack_splits_in_order_and_skips_missing_parts() {
        let p = Tensor::arange(0f32, 10., &Device::Cpu).unwrap();
        let a = candle_core::Shape::from((2, 3));
        let b = candle_core::Shape::from(4);
        let parts = unpack(&p, &[Some(&a), None, Some(&b)]).unwrap();
        assert_eq!(
            parts[0].as_ref().unwrap().to_vec2::<f32>().unwrap(),
            [[0., 1., 2.], [3., 4., 5.]]
        );
        assert!(parts[1].is_none());
        assert_eq!(
            parts[2].as_ref().unwrap().to_vec1::<f32>().unwrap(),
            [6., 7., 8., 9.]
        );
        // The later part owns a buffer of its own size, not the packed one.
        let (storage, layout) = parts[2].as_ref().unwrap().storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            panic!("a CPU tensor")
        };
        assert_eq!(cpu.as_slice::<f32>().unwrap().len(), 4);
        assert_eq!(layout.start_offset(), 0);
    }
}
