//! Launchers of the BatchNorm kernels: statistics and backward sums as a (channel, split) grid of
//! f64 partial sums plus a per-channel finalisation, normalisation and input gradient one block
//! per (image, channel) plane. With `nhwc` the input is the `[N, H, W, C]` permutation of a
//! channels-last tensor: the sums run over (32-channel, split) blocks of rows and the element-wise
//! passes over the flat buffer; the finalisations are shared.

use super::launch::{
    address_or_null, by_dtype, f32_view, launch_kernel, name_for, output, view, Elem,
};
use crate::kernel_geometry::{
    bn_reduce, bn_splits, column_reduce, column_splits, elementwise, per_channel, plane_groups,
    planes_per_block,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// An f32 per-channel operand (statistics, weight, bias, sums).
fn channel_view<'a>((s, l): Arg<'a>, what: &str) -> Result<CudaView<'a, f32>> {
    f32_view(s, l, &format!("batch_norm2d {what}"))
}

fn nchw(l: &Layout) -> Result<(i32, i32, i32)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n as i32, c as i32, (h * w) as i32))
}

/// `(M = N·H·W rows, C)` of an `[N, H, W, C]` input.
fn rows(l: &Layout) -> Result<(usize, i32)> {
    let (n, h, w, c) = l.shape().dims4()?;
    Ok((n * h * w, c as i32))
}

/// `[mean | biased variance]`, f32, 2·C.
pub(crate) fn stats(s: &CudaStorage, l: &Layout, nhwc: bool) -> Result<CudaStorage> {
    fn run<T: Elem>(s: &CudaStorage, l: &Layout, nhwc: bool) -> Result<CudaStorage> {
        let dev = s.device.clone();
        let x = view::<T>(s, l, "batch_norm2d input")?;
        let (c, hw, sp, count, mut partial);
        if nhwc {
            let (m, ci) = rows(l)?;
            (c, hw, sp, count) = (ci, 1i32, column_splits(m, ci as usize), m as f64);
            partial = output::<f64>(&dev, c as usize * sp * 2)?;
            let sp_i = sp as i32;
            launch_kernel!(
                &dev,
                name_for::<T>("bn_stats_partial_nhwc"),
                column_reduce(c as usize, sp),
                &x,
                &mut partial,
                &m,
                &c,
                &sp_i
            );
        } else {
            let n;
            (n, c, hw) = nchw(l)?;
            sp = bn_splits(n as usize, c as usize);
            count = n as f64 * hw as f64;
            partial = output::<f64>(&dev, c as usize * sp * 2)?;
            let sp_i = sp as i32;
            launch_kernel!(
                &dev,
                name_for::<T>("bn_stats_partial"),
                bn_reduce(c as usize, sp),
                &x,
                &mut partial,
                &n,
                &c,
                &hw,
                &sp_i
            );
        }
        let sp_i = sp as i32;
        let mut st = output::<f32>(&dev, 2 * c as usize)?;
        launch_kernel!(
            &dev,
            name_for::<T>("bn_stats_finalize"),
            per_channel(c as usize),
            &x,
            &partial,
            &mut st,
            &c,
            &hw,
            &sp_i,
            &count
        );
        Ok(CudaStorage::wrap_cuda_slice(st, dev))
    }
    by_dtype!(s.dtype(), "batch_norm2d", run(s, l, nhwc))
}

/// `y = (x - mean) * rstd * w + b`, plus `residual` if given, then ReLU if asked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    x: Arg<'_>,
    st: Arg<'_>,
    w: Arg<'_>,
    b: Arg<'_>,
    residual: Option<Arg<'_>>,
    eps: f32,
    relu: bool,
    nhwc: bool,
) -> Result<CudaStorage> {
    #[allow(clippy::too_many_arguments)]
    fn run<T: Elem>(
        x: Arg<'_>,
        st: Arg<'_>,
        w: Arg<'_>,
        b: Arg<'_>,
        residual: Option<Arg<'_>>,
        eps: f32,
        relu: bool,
        nhwc: bool,
    ) -> Result<CudaStorage> {
        let dev = x.0.device.clone();
        let xv = view::<T>(x.0, x.1, "batch_norm2d input")?;
        let (sv, wv, bv) = (
            channel_view(st, "statistics")?,
            channel_view(w, "weight")?,
            channel_view(b, "bias")?,
        );
        let total = x.1.shape().elem_count();
        let rv = match residual {
            Some(r) if r.0.dtype() != x.0.dtype() || r.1.shape().elem_count() != total => {
                candle_core::bail!(
                    "batch_norm2d_add_relu: the residual ({:?} {:?}) does not match the input ({:?} {:?})",
                    r.0.dtype(),
                    r.1.shape(),
                    x.0.dtype(),
                    x.1.shape()
                )
            }
            Some(r) => Some(view::<T>(r.0, r.1, "batch_norm2d residual")?),
            None => None,
        };
        // The kernels take the residual as a pointer that may be null.
        let r: u64 = address_or_null(rv.as_ref(), &dev);
        let mut y = output::<T>(&dev, total)?;
        let relu = relu as i32;
        if nhwc {
            let (_, c) = rows(x.1)?;
            launch_kernel!(
                &dev,
                name_for::<T>("bn_apply_nhwc"),
                elementwise(total),
                &xv,
                &sv,
                &wv,
                &bv,
                &r,
                &mut y,
                &total,
                &c,
                &eps,
                &relu
            );
            return Ok(CudaStorage::wrap_cuda_slice(y, dev));
        }
        let (n, c, hw) = nchw(x.1)?;
        let planes = (n as usize) * (c as usize);
        let per_block = planes_per_block(hw as usize);
        let per_block_i = per_block as i32;
        launch_kernel!(
            &dev,
            name_for::<T>("bn_apply"),
            plane_groups(planes, per_block),
            &xv,
            &sv,
            &wv,
            &bv,
            &r,
            &mut y,
            &c,
            &hw,
            &eps,
            &relu,
            &planes,
            &per_block_i
        );
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    by_dtype!(
        x.0.dtype(),
        "batch_norm2d",
        run(x, st, w, b, residual, eps, relu, nhwc)
    )
}

/// `[dweight | dbias]`, f32, 2·C, from the input and the gradient reaching the normalisation.
pub(crate) fn backward_sums(
    x: Arg<'_>,
    g: Arg<'_>,
    st: Arg<'_>,
    eps: f32,
    nhwc: bool,
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        x: Arg<'_>,
        g: Arg<'_>,
        st: Arg<'_>,
        eps: f32,
        nhwc: bool,
    ) -> Result<CudaStorage> {
        let dev = x.0.device.clone();
        let xv = view::<T>(x.0, x.1, "batch_norm2d input")?;
        let gv = view::<T>(g.0, g.1, "batch_norm2d gradient")?;
        let sv = channel_view(st, "statistics")?;
        let (c, sp, mut partial);
        if nhwc {
            let m;
            (m, c) = rows(x.1)?;
            sp = column_splits(m, c as usize);
            partial = output::<f64>(&dev, c as usize * sp * 2)?;
            let sp_i = sp as i32;
            launch_kernel!(
                &dev,
                name_for::<T>("bn_bwd_partial_nhwc"),
                column_reduce(c as usize, sp),
                &xv,
                &gv,
                &sv,
                &mut partial,
                &m,
                &c,
                &sp_i
            );
        } else {
            let (n, hw);
            (n, c, hw) = nchw(x.1)?;
            sp = bn_splits(n as usize, c as usize);
            partial = output::<f64>(&dev, c as usize * sp * 2)?;
            let (sp_i, relu) = (sp as i32, 0i32);
            // The ReLU mask is applied before (relu_backward); `x` stands in for the unused output.
            launch_kernel!(
                &dev,
                name_for::<T>("bn_bwd_partial"),
                bn_reduce(c as usize, sp),
                &xv,
                &xv,
                &gv,
                &sv,
                &mut partial,
                &n,
                &c,
                &hw,
                &sp_i,
                &relu
            );
        }
        let sp_i = sp as i32;
        let mut sums = output::<f32>(&dev, 2 * c as usize)?;
        launch_kernel!(
            &dev,
            "bn_bwd_finalize",
            per_channel(c as usize),
            &partial,
            &sv,
            &mut sums,
            &c,
            &sp_i,
            &eps
        );
        Ok(CudaStorage::wrap_cuda_slice(sums, dev))
    }
    by_dtype!(
        x.0.dtype(),
        "batch_norm2d backward",
        run(x, g, st, eps, nhwc)
    )
}

/// The input gradient of the train-mode normalisation.
pub(crate) fn backward_dx(
    x: Arg<'_>,
    g: Arg<'_>,
    st: Arg<'_>,
    w: Arg<'_>,
    sums: Arg<'_>,
    eps: f32,
    nhwc: bool,
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        x: Arg<'_>,
        g: Arg<'_>,
        st: Arg<'_>,
        w: Arg<'_>,
        sums: Arg<'_>,
        eps: f32,
        nhwc: bool,
    ) -> Result<CudaStorage> {
        let dev = x.0.device.clone();
        let xv = view::<T>(x.0, x.1, "batch_norm2d input")?;
        let gv = view::<T>(g.0, g.1, "batch_norm2d gradient")?;
        let (sv, wv, mv) = (
            channel_view(st, "statistics")?,
            channel_view(w, "weight")?,
            channel_view(sums, "sums")?,
        );
        let total = x.1.shape().elem_count();
        let mut dx = output::<T>(&dev, total)?;
        if nhwc {
            let (m, c) = rows(x.1)?;
            let count = m as f32;
            launch_kernel!(
                &dev,
                name_for::<T>("bn_bwd_dx_nhwc"),
                elementwise(total),
                &xv,
                &gv,
                &sv,
                &wv,
                &mv,
                &mut dx,
                &total,
                &c,
                &count,
                &eps
            );
            return Ok(CudaStorage::wrap_cuda_slice(dx, dev));
        }
        let (n, c, hw) = nchw(x.1)?;
        let count = n as f32 * hw as f32;
        let relu = 0i32;
        let planes = (n as usize) * (c as usize);
        let per_block = planes_per_block(hw as usize);
        let per_block_i = per_block as i32;
        launch_kernel!(
            &dev,
            name_for::<T>("bn_bwd_dx"),
            plane_groups(planes, per_block),
            &xv,
            &xv,
            &gv,
            &sv,
            &wv,
            &mv,
            &mut dx,
            &c,
            &hw,
            &count,
            &eps,
            &relu,
            &planes,
            &per_block_i
        );
        Ok(CudaStorage::wrap_cuda_slice(dx, dev))
    }
    by_dtype!(
        x.0.dtype(),
        "batch_norm2d backward",
        run(x, g, st, w, sums, eps, nhwc)
    )
}
