//! Launchers of the element-wise kernels: `base_T(x, y, n)` and `base_T(a, b, y, n)`.

use super::launch::{by_dtype, launch_kernel, name_for, output, view, Elem};
use crate::kernel_geometry::elementwise;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

/// `y = f(x)` with kernel `base` (same dtype and element count as `x`).
pub(crate) fn map1(base: &str, op: &str, s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    fn run<T: Elem>(base: &str, op: &str, s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
        let dev = s.device.clone();
        let n = l.shape().elem_count();
        let x = view::<T>(s, l, op)?;
        let mut y = output::<T>(&dev, n)?;
        launch_kernel!(&dev, name_for::<T>(base), elementwise(n), &x, &mut y, &n);
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    by_dtype!(s.dtype(), op, run(base, op, s, l))
}

/// `y = f(a, b)` with kernel `base` for two same-shape, same-dtype inputs.
pub(crate) fn map2(
    base: &str,
    op: &str,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        base: &str,
        op: &str,
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let n = l1.shape().elem_count();
        if l2.shape().elem_count() != n {
            candle_core::bail!(
                "{op}: inputs differ in size: {:?} and {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let dev = s1.device.clone();
        let a = view::<T>(s1, l1, op)?;
        let b = view::<T>(s2, l2, op)?;
        let mut y = output::<T>(&dev, n)?;
        launch_kernel!(
            &dev,
            name_for::<T>(base),
            elementwise(n),
            &a,
            &b,
            &mut y,
            &n
        );
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
    if s1.dtype() != s2.dtype() {
        candle_core::bail!(
            "{op}: inputs differ in dtype: {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        );
    }
    by_dtype!(s1.dtype(), op, run(base, op, (s1, l1), (s2, l2)))
}
