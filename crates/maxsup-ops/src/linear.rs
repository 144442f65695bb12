//! Fully connected layer `y = x W^T + b` as one custom op: bias folded into the GEMM output,
//! and a backward that produces dx, dW and db directly (GEMMs plus one column sum), instead of
//! candle's transpose / broadcast / reduce / gradient-accumulation nodes.

use crate::cpu::gemm::{matmul as gemm, matmul_into, Mat};
use crate::cpu::slices::{contiguous_f32, num_threads, split_range, tensor_from_vec, with_f32};
use crate::cpu::uninit::Output;
use crate::dispatch::cpu_only;
use crate::reference;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct LinearOp {
    need_x: bool,
    need_w: bool,
    need_b: bool,
}

/// Column sums of a row-major `rows x cols` matrix, parallel over row blocks.
pub(crate) fn column_sums(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = split_range(rows, num_threads())
        .into_par_iter()
        .map(|r| {
            let mut acc = vec![0f32; cols];
            for row in r {
                acc.iter_mut()
                    .zip(&m[row * cols..(row + 1) * cols])
                    .for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; cols];
    for p in parts {
        out.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
    out
}

/// `out[r] = bias` for every row, then `out += a @ bᵀ` (`a: [rows, k]`, `b: [n, k]`): the
/// forward of a linear layer on row-major slices.
pub(crate) fn affine_rows(
    a: &[f32],
    rows: usize,
    k: usize,
    b: &[f32],
    n: usize,
    bias: &[f32],
) -> Vec<f32> {
    let mut out = Output::new(rows * n);
    if n > 0 {
        out.slots().par_chunks_mut(n).for_each(|r| {
            crate::cpu::uninit::copy(r, bias);
        });
    }
    // SAFETY: every row of `n` elements received a copy of the bias (length `n`).
    let mut out = unsafe { out.assume_init() };
    gemm(
        &mut out,
        n,
        Mat::row_major(a, rows, k),
        Mat::row_major(b, n, k).t(),
        true,
        num_threads(),
    );
    out
}

/// `a @ b` (`a: [m, k]` given as a view, `b` row-major `[k, n]`) into a fresh `[m, n]` buffer:
/// the input and weight gradients of a linear layer.
pub(crate) fn product(a: Mat, b: &[f32], n: usize) -> Vec<f32> {
    let mut out = Output::new(a.rows * n);
    matmul_into(
        out.slots(),
        n,
        a,
        Mat::row_major(b, a.cols, n),
        num_threads(),
    );
    // SAFETY: an m x n product with row stride n writes all of `out`.
    unsafe { out.assume_init() }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "maxsup-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "linear input")?;
        let w = contiguous_f32(ws, wl, "linear weight")?;
        let b = contiguous_f32(bs, bl, "linear bias")?;
        let (rows, inp) = xl.shape().dims2()?;
        let (out, win) = wl.shape().dims2()?;
        if win != inp || b.len() != out {
            candle_core::bail!(
                "linear: input [{rows}, {inp}], weight [{out}, {win}], bias [{}] do not fit",
                b.len()
            );
        }
        let y = affine_rows(x, rows, inp, w, out, b);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, inp) = x.dims2()?;
        let out = w.dim(0)?;
        with_f32(dy, |g| {
            let gm = Mat::row_major(g, rows, out);
            let dx = if self.need_x {
                let dx = with_f32(w, |wv| Ok(product(gm, wv, inp)))?;
                Some(tensor_from_vec(dx, x.shape())?)
            } else {
                None
            };
            let dw = if self.need_w {
                let dw = with_f32(x, |xv| Ok(product(gm.t(), xv, inp)))?;
                Some(tensor_from_vec(dw, w.shape())?)
            } else {
                None
            };
            let db = if self.need_b {
                Some(tensor_from_vec(column_sums(g, rows, out), b.shape())?)
            } else {
                None
            };
            Ok((dx, dw, db))
        })
    }
}

/// `x @ weight^T + bias` over the last dimension of `x` (any rank >= 1; leading dims are
/// flattened into one GEMM), weight [out, in], bias [out]. Differentiable.
///
/// f32 on CPU runs the fused custom op; other dtypes/devices the composed `reference::linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if !cpu_only(&[x, weight])
        || bias.is_some_and(|b| !cpu_only(&[b]))
        || x.rank() == 0
        || weight.rank() != 2
    {
        return reference::linear(x, weight, bias);
    }
    let dims = x.dims().to_vec();
    let (inp, out) = (dims[dims.len() - 1], weight.dim(0)?);
    let x2 = x.reshape(((), inp))?.contiguous()?;
    let zeros;
    let b = match bias {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(out, candle_core::DType::F32, x.device())?;
            &zeros
        }
    };
    let op = LinearOp {
        need_x: x.track_op(),
        need_w: weight.track_op(),
        need_b: bias.is_some_and(|b| b.track_op()),
    };
    let y = x2.apply_op3(&weight.contiguous()?, &b.contiguous()?, op)?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = out;
    y.reshape(out_dims)
}
