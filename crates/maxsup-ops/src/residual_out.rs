//! A transformer sub-block's output inside the graph node (`residual_branch`'s CUDA path): the
//! output linear's bias, the stochastic-depth scale and the residual add in one pass.
//!
//! Composed, `x + s ⊙ (o + bias)` is three passes over `[B, N, C]` (the bias add, the product
//! with each image's scale, the add), seven reads and writes of the activation; here it is one
//! (read `x` and `o`, write `y`). Backward, the branch's output gradient `dy ⊙ s` comes with
//! the output linear's bias gradient (its column sums) from the same pass. Values are rounded
//! as the separate ops store them, each step in the activations' dtype, so they equal the
//! composed ops'. No op here has a backward of its own: the graph node's backward calls them.

use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::{ensure_len, Output};
use crate::linear::column_sums;
use crate::side_output::SideOutput;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of `n` in a `[B, ..., n]` operand and the rows per image, or an error naming `op`.
fn image_rows(shape: &Shape, n: usize, op: &str) -> Result<(usize, usize)> {
    let dims = shape.dims();
    if dims.len() < 2 || n == 0 || dims.last() != Some(&n) || dims[0] == 0 {
        candle_core::bail!("{op}: {shape:?} is not [B, ..., {n}]");
    }
    let rows = shape.elem_count() / n;
    Ok((rows, rows / dims[0]))
}

/// Checks that `scale` holds one f32 value per image of `x`, on its device (f32 whatever `x`'s
/// dtype: `1/keep` rounded to bf16 would scale every kept sample by up to 0.3% off).
fn check_scale(scale: &Tensor, x: &Tensor, op: &str) -> Result<()> {
    let batch = x.dim(0)?;
    if scale.elem_count() != batch
        || scale.dtype() != DType::F32
        || !scale.device().same_device(x.device())
    {
        candle_core::bail!(
            "{op}: the stochastic-depth scale ({:?} {:?}) is not one f32 per image of {:?}",
            scale.shape(),
            scale.dtype(),
            x.shape()
        );
    }
    Ok(())
}

/// `x` with each image's slice (the first dim) multiplied by its entry of `scale` (`[batch]`,
/// stochastic depth's 0 or 1/keep), composed: the product in f32 or wider (1/keep is not a
/// bf16; an f64 reference stays f64), rounded once to `x`'s dtype, as the kernels below do.
pub fn scale_per_sample(x: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; x.rank()];
    shape[0] = scale.elem_count();
    let wide = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    x.to_dtype(wide)?
        .broadcast_mul(&scale.to_dtype(wide)?.reshape(shape)?)?
        .to_dtype(x.dtype())
}

/// `x + scale ⊙ (o + bias)` for the output linear's bias-free result `o` (`x`'s shape
/// `[B, ..., n]`) and its bias (`[n]`), in `x`'s dtype, and one f32 scale per image (or none).
pub(crate) fn residual_bias_add(
    x: &Tensor,
    o: &Tensor,
    bias: &Tensor,
    scale: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "residual_bias_add";
    let n = bias.elem_count();
    image_rows(x.shape(), n, op)?;
    if o.shape() != x.shape() || o.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        candle_core::bail!(
            "{op}: branch output {:?} {:?} and bias {:?} {:?} do not match the input {:?} {:?}",
            o.shape(),
            o.dtype(),
            bias.shape(),
            bias.dtype(),
            x.shape(),
            x.dtype()
        );
    }
    if let Some(s) = scale {
        check_scale(s, x, op)?;
    }
    let scale = scale.map(|s| s.flatten_all()?.contiguous()).transpose()?;
    x.contiguous()?.apply_op3_no_bwd(
        &o.contiguous()?,
        &bias.contiguous()?,
        &ResidualOutOp { scale },
    )
}

/// The branch's output gradient `dy ⊙ scale` (`dy`: `[B, ..., n]`, one scale per image) and the
/// output linear's bias gradient (`[n]`, accumulated in f32), both in `dy`'s dtype.
pub(crate) fn scaled_bias_grad(dy: &Tensor, scale: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = dy.dim(candle_core::D::Minus1)?;
    image_rows(dy.shape(), n, "scaled_bias_grad")?;
    check_scale(scale, dy, "scaled_bias_grad")?;
    let op = ScaledBiasGradOp {
        bias_grad: SideOutput::new("scaled_bias_grad bias gradient"),
    };
    let g = dy
        .contiguous()?
        .apply_op2_no_bwd(&scale.flatten_all()?.contiguous()?, &op)?;
    let db = op.bias_grad.take()?.to_dtype(dy.dtype())?;
    Ok((g, db))
}

/// `(x, o, bias) -> y`, the scale (`[B]`, contiguous) captured.
struct ResidualOutOp {
    scale: Option<Tensor>,
}

impl CustomOp3 for ResidualOutOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-bias-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        os: &CpuStorage,
        ol: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = bl.shape().elem_count();
        let (_, per_image) = image_rows(xl.shape(), n, "residual_bias_add")?;
        let x = contiguous_f32(xs, xl, "residual_bias_add input")?;
        let o = contiguous_f32(os, ol, "residual_bias_add branch output")?;
        let bias = contiguous_f32(bs, bl, "residual_bias_add bias")?;
        ensure_len("residual_bias_add branch output", o.len(), x.len())?;
        let scale = match &self.scale {
            Some(s) => Some(s.to_vec1::<f32>()?),
            None => None,
        };
        let mut y = Output::new(x.len());
        y.slots()
            .par_chunks_mut(per_image * n)
            .zip(x.par_chunks(per_image * n).zip(o.par_chunks(per_image * n)))
            .enumerate()
            .for_each(|(b, (yi, (xi, oi)))| {
                let s = scale.as_ref().map(|s| s[b]);
                for (yr, (xr, or)) in yi.chunks_mut(n).zip(xi.chunks(n).zip(oi.chunks(n))) {
                    for (((y, &x), &o), &bv) in yr.iter_mut().zip(xr).zip(or).zip(bias) {
                        let v = o + bv;
                        y.write(x + s.map_or(v, |s| v * s));
                    }
                }
            });
        // SAFETY: the images cover the output and every element of each was written.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        os: &candle_core::CudaStorage,
        ol: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = bl.shape().elem_count();
        let (_, per_image) = image_rows(xl.shape(), n, "residual_bias_add")?;
        let y = crate::cuda::captured::with_optional_cuda(
            self.scale.as_ref(),
            "residual_bias_add: the scale",
            |scale| {
                crate::cuda::residual_out::residual_out_fwd(
                    (xs, xl),
                    (os, ol),
                    (bs, bl),
                    scale,
                    per_image * n,
                )
            },
        )?;
        Ok((y, xl.shape().clone()))
    }
}

/// `(dy, scale) -> dy ⊙ scale`, with the bias gradient (f32) left in `bias_grad`.
struct ScaledBiasGradOp {
    bias_grad: SideOutput,
}

impl CustomOp2 for ScaledBiasGradOp {
    fn name(&self) -> &'static str {
        "maxsup-scaled-bias-grad"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = *dl.shape().dims().last().unwrap_or(&0);
        let (rows, per_image) = image_rows(dl.shape(), n, "scaled_bias_grad")?;
        let dy = contiguous_f32(ds, dl, "scaled_bias_grad output gradient")?;
        let scale = contiguous_f32(ss, sl, "scaled_bias_grad scale")?;
        let mut g = Output::new(dy.len());
        g.slots()
            .par_chunks_mut(per_image * n)
            .zip(dy.par_chunks(per_image * n))
            .zip(scale)
            .for_each(|((gi, di), &s)| {
                for (g, &d) in gi.iter_mut().zip(di) {
                    g.write(d * s);
                }
            });
        // SAFETY: one scale per image, and every element of each image was written.
        let g = unsafe { g.assume_init() };
        let db = column_sums(&g, rows, n);
        self.bias_grad.put_cpu(db, n)?;
        Ok((CpuStorage::F32(g), dl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = *dl.shape().dims().last().unwrap_or(&0);
        let (_, per_image) = image_rows(dl.shape(), n, "scaled_bias_grad")?;
        let (g, db) =
            crate::cuda::residual_out::residual_out_bwd((ds, dl), (ss, sl), n, per_image)?;
        self.bias_grad.put_cuda(db, n)?;
        Ok((g, dl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn seq(n: usize, scale: f32, shift: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * scale + shift)
            .collect()
    }

    #[test]
    fn fused_residual_output_equals_the_separate_ops() -> Result<()> {
        let dev = Device::Cpu;
        // 3 images of 5 tokens of 7 features.
        let (b, t, n) = (3, 5, 7);
        let x = Tensor::from_vec(seq(b * t * n, 2.0, 0.0), (b, t, n), &dev)?;
        let o = Tensor::from_vec(seq(b * t * n, 3.0, 0.1), (b, t, n), &dev)?;
        let bias = Tensor::from_vec(seq(n, 1.0, 0.3), n, &dev)?;
        let scale = Tensor::from_vec(vec![0.0f32, 1.25, 1.0 / 0.9], (b, 1, 1), &dev)?;
        let biased = o.broadcast_add(&bias)?;
        let with = (&x + biased.broadcast_mul(&scale)?)?;
        let without = (&x + &biased)?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        assert_eq!(
            flat(&residual_bias_add(&x, &o, &bias, Some(&scale))?)?,
            flat(&with)?
        );
        assert_eq!(
            flat(&residual_bias_add(&x, &o, &bias, None)?)?,
            flat(&without)?
        );

        let dy = Tensor::from_vec(seq(b * t * n, 1.0, 0.05), (b, t, n), &dev)?;
        let (g, db) = scaled_bias_grad(&dy, &scale)?;
        let want_g = dy.broadcast_mul(&scale)?;
        assert_eq!(flat(&g)?, flat(&want_g)?);
        assert_eq!(
            db.to_vec1::<f32>()?,
            crate::linear_bias::bias_grad(&want_g)?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn operands_that_do_not_match_are_errors_naming_the_op() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
        let bias = Tensor::zeros(4, DType::F32, &dev)?;
        let e = residual_bias_add(&x, &x.narrow(1, 0, 2)?, &bias, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("residual_bias_add") && e.contains("branch output"),
            "{e}"
        );
        let three = Tensor::zeros(3, DType::F32, &dev)?;
        let e = residual_bias_add(&x, &x, &bias, Some(&three))
            .unwrap_err()
            .to_string();
        assert!(e.contains("stochastic-depth scale"), "{e}");
        let e = scaled_bias_grad(&x, &three).unwrap_err().to_string();
        assert!(
            e.contains("scaled_bias_grad") && e.contains("per image"),
            "{e}"
        );
        Ok(())
    }
}
