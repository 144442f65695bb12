//! Launchers of the bias kernels over `[m, n]` GEMM results (ops.cu, "a linear layer's bias"):
//! fc1's bias add fused with the GELU, and bias gradients as fixed-order column sums.

use super::launch::{by_dtype, launch_kernel, name_for, output, view, Elem};
use crate::kernel_geometry::{column_reduce, column_splits, column_sum, elementwise};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Layout, Result};

/// Rows and columns of a `[m, n]` operand, with `n` as the kernels' `int`.
fn rows_and_columns(l: &Layout, n: usize, op: &str) -> Result<(usize, i32)> {
    let total = l.shape().elem_count();
    if n == 0 || !total.is_multiple_of(n) || n > i32::MAX as usize {
        candle_core::bail!("{op}: {:?} is not rows of {n} features", l.shape());
    }
    Ok((total / n, n as i32))
}

/// The `[splits][n]` partial sums added into `[n]` (f32).
pub(super) fn finish_column_sums(
    dev: &CudaDevice,
    partial: &CudaSlice<f32>,
    splits: usize,
    n: i32,
) -> Result<CudaSlice<f32>> {
    let mut out = output::<f32>(dev, n as usize)?;
    let splits = splits as i32;
    launch_kernel!(
        dev,
        "column_sum_f32",
        column_sum(n as usize),
        partial,
        &mut out,
        &splits,
        &n
    );
    Ok(out)
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
        let (_, n) = rows_and_columns(gl, bl.shape().elem_count(), "bias_gelu")?;
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
        let op = "bias_gelu backward";
        let dev = gs.device.clone();
        let (m, n) = rows_and_columns(gl, bl.shape().elem_count(), op)?;
        if dl.shape() != gl.shape() {
            candle_core::bail!(
                "{op}: output gradient {:?} differs from the input {:?}",
                dl.shape(),
                gl.shape()
            );
        }
        let gv = view::<T>(gs, gl, "bias_gelu input")?;
        let bv = view::<T>(bs, bl, "bias_gelu bias")?;
        let dv = view::<T>(ds, dl, "bias_gelu output gradient")?;
        let splits = column_splits(m, n as usize);
        let mut dh = output::<T>(&dev, m * n as usize)?;
        let mut partial = output::<f32>(&dev, splits * n as usize)?;
        let splits_i = splits as i32;
        launch_kernel!(
            &dev,
            name_for::<T>("bias_gelu_bwd"),
            column_reduce(n as usize, splits),
            &gv,
            &bv,
            &dv,
            &mut dh,
            &mut partial,
            &m,
            &n,
            &splits_i
        );
        let db = finish_column_sums(&dev, &partial, splits, n)?;
        Ok((
            CudaStorage::wrap_cuda_slice(dh, dev.clone()),
            CudaStorage::wrap_cuda_slice(db, dev),
        ))
    }
    if g.0.dtype() != bias.0.dtype() || g.0.dtype() != dy.0.dtype() {
        candle_core::bail!(
            "bias_gelu backward: operands differ in dtype: {:?}, {:?}, {:?}",
            g.0.dtype(),
            bias.0.dtype(),
            dy.0.dtype()
        );
    }
    by_dtype!(g.0.dtype(), "bias_gelu backward", run(g, bias, dy))
}

/// The column sums (f32, `[n]`) of `dy: [m, n]`: a linear layer's bias gradient.
pub(crate) fn bias_grad(dy: (&CudaStorage, &Layout), n: usize) -> Result<CudaStorage> {
    fn run<T: Elem>((ds, dl): (&CudaStorage, &Layout), n: usize) -> Result<CudaStorage> {
        let dev = ds.device.clone();
        let (m, n) = rows_and_columns(dl, n, "bias gradient")?;
        let dv = view::<T>(ds, dl, "bias gradient's output gradient")?;
        let splits = column_splits(m, n as usize);
        let mut partial = output::<f32>(&dev, splits * n as usize)?;
        let splits_i = splits as i32;
        launch_kernel!(
            &dev,
            name_for::<T>("bias_grad_partial"),
            column_reduce(n as usize, splits),
            &dv,
            &mut partial,
            &m,
            &n,
            &splits_i
        );
        let db = finish_column_sums(&dev, &partial, splits, n)?;
        Ok(CudaStorage::wrap_cuda_slice(db, dev))
    }
    by_dtype!(dy.0.dtype(), "bias gradient", run(dy, n))
}
