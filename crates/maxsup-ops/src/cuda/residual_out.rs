//! Launchers of the residual-output kernels (ops.cu, "a residual branch's output"): the output
//! linear's bias, the stochastic-depth scale and the residual add forward; the scaled gradient
//! with the bias gradient backward.

use super::column_sums::ColumnSums;
use super::launch::{address_or_null, by_dtype, launch_kernel, name_for, output, view, Elem};
use crate::kernel_geometry::elementwise;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

type Operand<'a> = (&'a CudaStorage, &'a Layout);

/// `x + s ⊙ (o + bias)` over `[m, n]` rows; `scale` holds one f32 value per `per_image`
/// elements (or is none). Shapes and dtypes are checked by the caller (`crate::residual_out`).
pub(crate) fn residual_out_fwd(
    x: Operand,
    o: Operand,
    bias: Operand,
    scale: Option<Operand>,
    per_image: usize,
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (xs, xl): Operand,
        (os, ol): Operand,
        (bs, bl): Operand,
        scale: Option<Operand>,
        per_image: usize,
    ) -> Result<CudaStorage> {
        let dev = xs.device.clone();
        let total = xl.shape().elem_count();
        let n = i32::try_from(bl.shape().elem_count())
            .map_err(|_| candle_core::Error::Msg("residual_bias_add: width exceeds int".into()))?;
        let xv = view::<T>(xs, xl, "residual_bias_add input")?;
        let ov = view::<T>(os, ol, "residual_bias_add branch output")?;
        let bv = view::<T>(bs, bl, "residual_bias_add bias")?;
        let sv = scale
            .map(|(ss, sl)| view::<f32>(ss, sl, "residual_bias_add scale"))
            .transpose()?;
        let s: u64 = address_or_null(sv.as_ref(), &dev);
        let mut y = output::<T>(&dev, total)?;
        launch_kernel!(
            &dev,
            name_for::<T>("residual_out_fwd"),
            elementwise(total),
            &xv,
            &ov,
            &bv,
            &s,
            &mut y,
            &total,
            &n,
            &per_image
        );
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    by_dtype!(
        x.0.dtype(),
        "residual_bias_add",
        run(x, o, bias, scale, per_image)
    )
}

/// `(dy ⊙ s, column sums of it (f32))` for `dy: [m, n]` and one scale per `rows_per_image` rows.
pub(crate) fn residual_out_bwd(
    dy: Operand,
    scale: Operand,
    n: usize,
    rows_per_image: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    fn run<T: Elem>(
        (ds, dl): Operand,
        (ss, sl): Operand,
        n: usize,
        rows_per_image: usize,
    ) -> Result<(CudaStorage, CudaStorage)> {
        let dev = ds.device.clone();
        let m = dl.shape().elem_count() / n;
        let n_i = i32::try_from(n)
            .map_err(|_| candle_core::Error::Msg("scaled_bias_grad: width exceeds int".into()))?;
        let dv = view::<T>(ds, dl, "scaled_bias_grad output gradient")?;
        let sv = view::<f32>(ss, sl, "scaled_bias_grad scale")?;
        let mut g = output::<T>(&dev, m * n)?;
        let mut sums = ColumnSums::new(&dev, m, n)?;
        launch_kernel!(
            &dev,
            name_for::<T>("residual_out_bwd"),
            sums.launch(),
            &dv,
            &sv,
            &mut g,
            &mut sums.partial,
            &m,
            &n_i,
            &rows_per_image,
            &sums.splits
        );
        let db = sums.finish(&dev)?;
        Ok((
            CudaStorage::wrap_cuda_slice(g, dev.clone()),
            CudaStorage::wrap_cuda_slice(db, dev),
        ))
    }
    by_dtype!(
        dy.0.dtype(),
        "scaled_bias_grad",
        run(dy, scale, n, rows_per_image)
    )
}
