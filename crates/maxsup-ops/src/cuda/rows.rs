//! Launchers of the row kernels (softmax and LayerNorm over the last dimension, one warp per row).

use super::column_sums::finish_column_sums;
use super::launch::{
    address_or_null, by_dtype, f32_view, launch_kernel, name_for, output, view, Elem,
};
use crate::kernel_geometry::{
    layer_norm_param_parts, layer_norm_params, warp_per_row, LAYER_NORM_PARAMS_MAX_D,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

/// Rows and row length of a contiguous tensor (the last dimension; a scalar is one row of one).
fn rows_of(l: &Layout) -> (usize, i32) {
    let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / d, d as i32)
}

pub(crate) fn softmax_fwd(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    fn run<T: Elem>(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
        let dev = s.device.clone();
        let (rows, d) = rows_of(l);
        let x = view::<T>(s, l, "softmax input")?;
        let mut y = output::<T>(&dev, l.shape().elem_count())?;
        launch_kernel!(
            &dev,
            name_for::<T>("softmax_fwd"),
            warp_per_row(rows),
            &x,
            &mut y,
            &rows,
            &d
        );
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    by_dtype!(s.dtype(), "softmax", run(s, l))
}

pub(crate) fn softmax_bwd(
    y: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (ys, yl): (&CudaStorage, &Layout),
        (gs, gl): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let dev = ys.device.clone();
        let (rows, d) = rows_of(yl);
        let y = view::<T>(ys, yl, "softmax output")?;
        let g = view::<T>(gs, gl, "softmax output gradient")?;
        let mut dx = output::<T>(&dev, yl.shape().elem_count())?;
        launch_kernel!(
            &dev,
            name_for::<T>("softmax_bwd"),
            warp_per_row(rows),
            &y,
            &g,
            &mut dx,
            &rows,
            &d
        );
        Ok(CudaStorage::wrap_cuda_slice(dx, dev))
    }
    by_dtype!(y.0.dtype(), "softmax backward", run(y, dy))
}

pub(crate) fn layer_norm_fwd(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (xs, xl): (&CudaStorage, &Layout),
        (ws, wl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
        eps: f32,
    ) -> Result<CudaStorage> {
        let dev = xs.device.clone();
        let (rows, d) = rows_of(xl);
        let x = view::<T>(xs, xl, "layer_norm input")?;
        let w = f32_view(ws, wl, "layer_norm weight")?;
        let b = f32_view(bs, bl, "layer_norm bias")?;
        let mut y = output::<T>(&dev, xl.shape().elem_count())?;
        launch_kernel!(
            &dev,
            name_for::<T>("layer_norm_fwd"),
            warp_per_row(rows),
            &x,
            &w,
            &b,
            &mut y,
            &rows,
            &d,
            &eps
        );
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    by_dtype!(x.0.dtype(), "layer_norm", run(x, w, b, eps))
}

/// LayerNorm's backward in one kernel: the input gradient (in `x`'s dtype), plus `residual`
/// (the gradient of a pre-norm block's residual path, `x`'s shape and dtype; checked by the
/// caller) where given, and `[dweight | dbias]` (f32, 2·D: per-block partial sums, then a
/// fixed-order column sum).
pub(crate) fn layer_norm_bwd(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
    eps: f32,
) -> Result<(CudaStorage, CudaStorage)> {
    fn run<T: Elem>(
        (xs, xl): (&CudaStorage, &Layout),
        (ws, wl): (&CudaStorage, &Layout),
        (gs, gl): (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
        eps: f32,
    ) -> Result<(CudaStorage, CudaStorage)> {
        let dev = xs.device.clone();
        let (rows, d) = rows_of(xl);
        let width = 2 * d as usize;
        if d as usize > LAYER_NORM_PARAMS_MAX_D {
            candle_core::bail!(
                "layer_norm backward: rows of {d} exceed the kernel's shared memory (at most {LAYER_NORM_PARAMS_MAX_D})"
            );
        }
        let x = view::<T>(xs, xl, "layer_norm input")?;
        let w = f32_view(ws, wl, "layer_norm weight")?;
        let g = view::<T>(gs, gl, "layer_norm output gradient")?;
        let rv = residual
            .map(|(rs, rl)| view::<T>(rs, rl, "layer_norm residual gradient"))
            .transpose()?;
        let r: u64 = address_or_null(rv.as_ref(), &dev);
        let mut dx = output::<T>(&dev, xl.shape().elem_count())?;
        let parts = layer_norm_param_parts(rows);
        let mut partial = output::<f32>(&dev, parts * width)?;
        launch_kernel!(
            &dev,
            name_for::<T>("layer_norm_bwd"),
            layer_norm_params(parts, d as usize),
            &x,
            &w,
            &g,
            &r,
            &mut dx,
            &mut partial,
            &rows,
            &d,
            &eps
        );
        let sums = finish_column_sums(&dev, &partial, parts, width)?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            CudaStorage::wrap_cuda_slice(sums, dev),
        ))
    }
    by_dtype!(
        x.0.dtype(),
        "layer_norm backward",
        run(x, w, dy, residual, eps)
    )
}
