//! Launchers of the max-pool kernels (forward with a u8 arg-max per output, gather backward).

use super::launch::{by_dtype, elementwise, launch_kernel, name_for, output, view, Elem};
use crate::max_pool::PoolGeom;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

/// `(y, argmax)` for an NCHW input and the output size `(oh, ow)`.
pub(crate) fn max_pool_fwd(
    s: &CudaStorage,
    l: &Layout,
    g: PoolGeom,
    (oh, ow): (usize, usize),
) -> Result<(CudaStorage, CudaStorage)> {
    fn run<T: Elem>(
        s: &CudaStorage,
        l: &Layout,
        g: PoolGeom,
        (oh, ow): (usize, usize),
    ) -> Result<(CudaStorage, CudaStorage)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let dev = s.device.clone();
        let x = view::<T>(s, l, "max_pool2d input")?;
        let planes = n * c;
        let total = planes * oh * ow;
        let mut y = output::<T>(&dev, total)?;
        let mut arg = output::<u8>(&dev, total)?;
        let dims = [
            h as i32,
            w as i32,
            oh as i32,
            ow as i32,
            g.kernel as i32,
            g.stride as i32,
            g.pad as i32,
        ];
        let [h, w, oh, ow, k, st, p] = dims;
        launch_kernel!(
            &dev,
            name_for::<T>("max_pool_fwd"),
            elementwise(total),
            &x,
            &mut y,
            &mut arg,
            &planes,
            &h,
            &w,
            &oh,
            &ow,
            &k,
            &st,
            &p
        );
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            CudaStorage::wrap_cuda_slice(arg, dev),
        ))
    }
    by_dtype!(s.dtype(), "max_pool2d", run(s, l, g, (oh, ow)))
}

/// `dx` of the input shape `(n, c, h, w)` from `dy` and the forward's arg-max.
pub(crate) fn max_pool_bwd(
    dy: (&CudaStorage, &Layout),
    arg: (&CudaStorage, &Layout),
    g: PoolGeom,
    input: (usize, usize, usize, usize),
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (gs, gl): (&CudaStorage, &Layout),
        (is, il): (&CudaStorage, &Layout),
        g: PoolGeom,
        (n, c, h, w): (usize, usize, usize, usize),
    ) -> Result<CudaStorage> {
        let (_, _, oh, ow) = gl.shape().dims4()?;
        let dev = gs.device.clone();
        let dy = view::<T>(gs, gl, "max_pool2d output gradient")?;
        let arg = view::<u8>(is, il, "max_pool2d arg-max")?;
        let planes = n * c;
        let total = planes * h * w;
        let mut dx = output::<T>(&dev, total)?;
        let dims = [
            h as i32,
            w as i32,
            oh as i32,
            ow as i32,
            g.kernel as i32,
            g.stride as i32,
            g.pad as i32,
        ];
        let [h, w, oh, ow, k, st, p] = dims;
        launch_kernel!(
            &dev,
            name_for::<T>("max_pool_bwd"),
            elementwise(total),
            &dy,
            &arg,
            &mut dx,
            &planes,
            &h,
            &w,
            &oh,
            &ow,
            &k,
            &st,
            &p
        );
        Ok(CudaStorage::wrap_cuda_slice(dx, dev))
    }
    by_dtype!(dy.0.dtype(), "max_pool2d backward", run(dy, arg, g, input))
}
