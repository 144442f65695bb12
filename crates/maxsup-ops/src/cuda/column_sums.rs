//! Fixed-order column sums on the GPU: a kernel leaves `[parts][n]` f32 partial sums and
//! `column_sum_f32` adds them per column in order (no atomics: the sums do not depend on timing).

use super::launch::{launch_kernel, output};
use crate::kernel_geometry::{column_reduce, column_splits, column_sum, Launch};
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::CudaDevice;
use candle_core::Result;

/// `[n]` from the `[parts][n]` partial sums.
pub(crate) fn finish_column_sums(
    dev: &CudaDevice,
    partial: &CudaSlice<f32>,
    parts: usize,
    n: usize,
) -> Result<CudaSlice<f32>> {
    let mut out = output::<f32>(dev, n)?;
    let parts = parts as i32;
    let n = n as i32;
    launch_kernel!(
        dev,
        "column_sum_f32",
        column_sum(n as usize),
        partial,
        &mut out,
        &parts,
        &n
    );
    Ok(out)
}

/// The partial sums of a column reduction over `[m, n]` rows in the 32 x 8 block geometry of
/// ops.cu's `store_column_partial` (`column_splits` row splits, `column_reduce` launch).
pub(crate) struct ColumnSums {
    /// `[splits][n]`, written by the reducing kernel.
    pub partial: CudaSlice<f32>,
    /// The kernels' `splits` argument.
    pub splits: i32,
    n: usize,
}

impl ColumnSums {
    pub(crate) fn new(dev: &CudaDevice, m: usize, n: usize) -> Result<Self> {
        let splits = column_splits(m, n);
        Ok(Self {
            partial: output::<f32>(dev, splits * n)?,
            splits: splits as i32,
            n,
        })
    }

    /// The reducing kernel's launch.
    pub(crate) fn launch(&self) -> Launch {
        column_reduce(self.n, self.splits as usize)
    }

    /// The column sums, `[n]` f32.
    pub(crate) fn finish(&self, dev: &CudaDevice) -> Result<CudaSlice<f32>> {
        finish_column_sums(dev, &self.partial, self.splits as usize, self.n)
    }
}
