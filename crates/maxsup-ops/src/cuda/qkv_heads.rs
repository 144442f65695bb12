//! Launchers of the attention-head kernels (ops.cu, "attention heads from qkv"): the qkv
//! projection's result to `[3][B][heads][N][hd]` with its bias and the queries' scale, and the
//! three gradients back to `[B*N, 3C]` with the bias gradient.

use super::column_sums::ColumnSums;
use super::launch::{by_dtype, launch_kernel, name_for, output, view, Elem};
use crate::kernel_geometry::elementwise;
use crate::qkv_heads::Heads;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

/// `[3][B][heads][N][hd]` from the bias-free qkv result `g` (`[B*N, 3C]`) and the bias.
pub(crate) fn qkv_heads_fwd(
    g: (&CudaStorage, &Layout),
    bias: (&CudaStorage, &Layout),
    shape: Heads,
    scale: f32,
) -> Result<CudaStorage> {
    fn run<T: Elem>(
        (gs, gl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
        shape: Heads,
        scale: f32,
    ) -> Result<CudaStorage> {
        let dev = gs.device.clone();
        let total = shape.elems();
        let (tokens, heads, hd) = shape.ints("split_qkv_heads")?;
        let gv = view::<T>(gs, gl, "split_qkv_heads input")?;
        let bv = view::<T>(bs, bl, "split_qkv_heads bias")?;
        let mut out = output::<T>(&dev, total)?;
        launch_kernel!(
            &dev,
            name_for::<T>("qkv_heads_fwd"),
            elementwise(total),
            &gv,
            &bv,
            &mut out,
            &total,
            &tokens,
            &heads,
            &hd,
            &scale
        );
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    by_dtype!(g.0.dtype(), "split_qkv_heads", run(g, bias, shape, scale))
}

/// `(dh [B*N, 3C], dbias [3C] f32)` from the gradients of the scaled queries, the keys and the
/// values (`[B, heads, N, hd]` each, one dtype).
pub(crate) fn qkv_heads_bwd(
    dq: (&CudaStorage, &Layout),
    dk: (&CudaStorage, &Layout),
    dv: (&CudaStorage, &Layout),
    shape: Heads,
    scale: f32,
) -> Result<(CudaStorage, CudaStorage)> {
    fn run<T: Elem>(
        (qs, ql): (&CudaStorage, &Layout),
        (ks, kl): (&CudaStorage, &Layout),
        (vs, vl): (&CudaStorage, &Layout),
        shape: Heads,
        scale: f32,
    ) -> Result<(CudaStorage, CudaStorage)> {
        let dev = qs.device.clone();
        let (tokens, heads, hd) = shape.ints("merge_qkv_heads")?;
        let (m, n) = (shape.batch * shape.tokens, 3 * shape.heads * shape.head_dim);
        let qv = view::<T>(qs, ql, "merge_qkv_heads query gradient")?;
        let kv = view::<T>(ks, kl, "merge_qkv_heads key gradient")?;
        let vv = view::<T>(vs, vl, "merge_qkv_heads value gradient")?;
        let mut dh = output::<T>(&dev, m * n)?;
        let mut sums = ColumnSums::new(&dev, m, n)?;
        launch_kernel!(
            &dev,
            name_for::<T>("qkv_heads_bwd"),
            sums.launch(),
            &qv,
            &kv,
            &vv,
            &mut dh,
            &mut sums.partial,
            &m,
            &tokens,
            &heads,
            &hd,
            &scale,
            &sums.splits
        );
        let db = sums.finish(&dev)?;
        Ok((
            CudaStorage::wrap_cuda_slice(dh, dev.clone()),
            CudaStorage::wrap_cuda_slice(db, dev),
        ))
    }
    by_dtype!(
        dq.0.dtype(),
        "merge_qkv_heads",
        run(dq, dk, dv, shape, scale)
    )
}
