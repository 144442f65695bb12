//! Launchers of the max-pool kernels (forward with a u8 arg-max per output, gather backward).

use super::launch::{by_dtype, launch_kernel, name_for, output, view, Elem};
use crate::kernel_geometry::elementwise;
use crate::max_pool::PoolGeom;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

/// `(y, argmax)` for an input of sizes `(n, c, h, w)`, laid out NCHW or (`nhwc`) NHWC, and the
/// output size `(oh, ow)`; the outputs have the input's layout.
pub(crate) fn max_pool_fwd(
    s: &CudaStorage,
    l: &Layout,
    sizes: (usize, usize, usize, usize),
    g: PoolGeom,
    (oh, ow): (usize, usize),
    nhwc: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    fn run<T: Elem>(
        s: &CudaStorage,
        l: &Layout,
        (n, c, h, w): (usize, usize, usize, usize),
        g: PoolGeom,
        (oh, ow): (usize, usize),
        nhwc: bool,
    ) -> Result<(CudaStorage, CudaStorage)> {
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
        if nhwc {
            let c = c as i32;
            launch_kernel!(
                &dev,
                name_for::<T>("max_pool_fwd_nhwc"),
                elementwise(total),
                &x,
                &mut y,
                &mut arg,
                &n,
                &c,
                &h,
                &w,
                &oh,
                &ow,
                &k,
                &st,
                &p
            );
            return Ok((
                CudaStorage::wrap_cuda_slice(y, dev.clone()),
                CudaStorage::wrap_cuda_slice(arg, dev),
            ));
        }
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
    by_dtype!(s.dtype(), "max_pool2d", run(s, l, sizes, g, (oh, ow), nhwc))
}

/// `dx` of the op's input shape `input` (`(n, c, h, w)`, or `(n, h, w, c)` when `nhwc`) from
/// `dy` and the forward's arg-max.
pub(crate) fn max_pool_bwd(
    dy: (&CudaStorage, &Layout),
    arg: (&CudaStorage, &Layout),
    g: PoolGeom,
    input: (usize, usize, usize, usize),
    nhwc: bool,
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (gs, gl): (&CudaStorage, &Layout),
        (is, il): (&CudaStorage, &Layout),
        g: PoolGeom,
        input: (usize, usize, usize, usize),
        nhwc: bool,
    ) -> Result<CudaStorage> {
        let (n, c, h, w, oh, ow) = match nhwc {
            false => {
                let (n, c, h, w) = input;
                let (_, _, oh, ow) = gl.shape().dims4()?;
                (n, c, h, w, oh, ow)
            }
            true => {
                let (n, h, w, c) = input;
                let (_, oh, ow, _) = gl.shape().dims4()?;
                (n, c, h, w, oh, ow)
            }
        };
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
        if nhwc {
            let c = c as i32;
            launch_kernel!(
                &dev,
                name_for::<T>("max_pool_bwd_nhwc"),
                elementwise(total),
                &dy,
                &arg,
                &mut dx,
                &n,
                &c,
                &h,
                &w,
                &oh,
                &ow,
                &k,
                &st,
                &p
            );
            return Ok(CudaStorage::wrap_cuda_slice(dx, dev));
        }
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
    by_dtype!(
        dy.0.dtype(),
        "max_pool2d backward",
        run(dy, arg, g, input, nhwc)
    )
}
