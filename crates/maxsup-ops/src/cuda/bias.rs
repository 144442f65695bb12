//! Launchers of the bias kernels over `[m, n]` GEMM results (ops.cu, "a linear layer's bias"):
//! fc1's bias add fused with the GELU, and bias gradients as fixed-order column sums. Shapes and
//! dtypes are checked by the caller (`crate::linear_bias`).

use super::column_sums::ColumnSums;
use super::launch::{by_dtype, launch_kernel, name_for, output, view, Elem};
use crate::kernel_geometry::elementwise;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

/// Rows of `n` features in `l`, and `n` as the kernels' `int`.
fn rows_and_width(l: &Layout, n: usize, op: &str) -> Result<(usize, i32)> {
    let width = i32::try_from(n)
        .map_err(|_| candle_core::Error::Msg(format!("{op}: width {n} exceeds int")))?;
    Ok((l.shape().elem_count() / n.max(1), width))
}

/// `gelu(g + bias)` for `g: [m, n]` and `bias: [n]` of one dtype.
pub(crate) fn bias_gelu_fwd(
    g: (&CudaStorage, &Layout),
    bias: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (gs, gl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let dev = gs.device.clone();
        let (_, n) = rows_and_width(gl, bl.shape().elem_count(), "bias_gelu")?;
        let total = gl.shape().elem_count();
        let gv = view::<T>(gs, gl, "bias_gelu input")?;
        let bv = view::<T>(bs, bl, "bias_gelu bias")?;
        let mut y = output::<T>(&dev, total)?;
        launch_kernel!(
            &dev,
            name_for::<T>("bias_gelu_fwd"),
            elementwise(total),
            &gv,
            &bv,
            &mut y,
            &total,
            &n
        );
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    by_dtype!(g.0.dtype(), "bias_gelu", run(g, bias))
}

/// `(dh, dbias)`: `dh = dy * gelu'(g + bias)` in the operands' dtype and its column sums (f32).
pub(crate) fn bias_gelu_bwd(
    g: (&CudaStorage, &Layout),
    bias: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, CudaStorage)> {
    fn run<T: Elem>(
        (gs, gl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
        (ds, dl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, CudaStorage)> {
        let dev = gs.device.clone();
        let (m, n) = rows_and_width(gl, bl.shape().elem_count(), "bias_gelu backward")?;
        let gv = view::<T>(gs, gl, "bias_gelu input")?;
        let bv = view::<T>(bs, bl, "bias_gelu bias")?;
        let dv = view::<T>(ds, dl, "bias_gelu output gradient")?;
        let mut dh = output::<T>(&dev, m * n as usize)?;
        let mut sums = ColumnSums::new(&dev, m, n as usize)?;
        launch_kernel!(
            &dev,
            name_for::<T>("bias_gelu_bwd"),
            sums.launch(),
            &gv,
            &bv,
            &dv,
            &mut dh,
            &mut sums.partial,
            &m,
            &n,
            &sums.splits
        );
        let db = sums.finish(&dev)?;
        Ok((
            CudaStorage::wrap_cuda_slice(dh, dev.clone()),
            CudaStorage::wrap_cuda_slice(db, dev),
        ))
    }
    by_dtype!(g.0.dtype(), "bias_gelu backward", run(g, bias, dy))
}

/// The column sums (f32, `[n]`) of `dy: [m, n]`: a linear layer's bias gradient.
pub(crate) fn bias_grad(dy: (&CudaStorage, &Layout), n: usize) -> Result<CudaStorage> {
    fn run<T: Elem>((ds, dl): (&CudaStorage, &Layout), n: usize) -> Result<CudaStorage> {
        let dev = ds.device.clone();
        let (m, n) = rows_and_width(dl, n, "bias gradient")?;
        let dv = view::<T>(ds, dl, "bias gradient's output gradient")?;
        let mut sums = ColumnSums::new(&dev, m, n as usize)?;
        launch_kernel!(
            &dev,
            name_for::<T>("bias_grad_partial"),
            sums.launch(),
            &dv,
            &mut sums.partial,
            &m,
            &n,
            &sums.splits
        );
        let db = sums.finish(&dev)?;
        Ok(CudaStorage::wrap_cuda_slice(db, dev))
    }
    by_dtype!(dy.0.dtype(), "bias gradient", run(dy, n))
}
