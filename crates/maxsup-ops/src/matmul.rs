//! Batched matrix product as a custom op, parallel over the batch with one single-threaded GEMM
//! per matrix. candle's CPU matmul instead loops over the batch and splits every GEMM over all
//! threads: for attention (B * heads matrices of 65 x 64) that is hundreds of tiny parallel
//! GEMMs per call, dominated by thread hand-offs. Strided inputs (e.g. `k.t()`) are read in
//! place, without a contiguous copy.

use crate::cpu::gemm::{matmul_into, Mat};
use crate::cpu::slices::{contiguous_f32, num_threads, tensor_from_vec};
use crate::cpu::uninit::Output;
use crate::dispatch::cpu_only;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// A batch of strided matrices inside one buffer: matrix `i` starts at `offsets[i]` and has
/// element (r, c) at `offsets[i] + r * rs + c * cs`.
struct Batched {
    offsets: Vec<usize>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Batched {
    fn from_layout(l: &Layout) -> Result<Self> {
        let dims = l.dims();
        let st = l.stride();
        let r = dims.len();
        if r < 2 {
            candle_core::bail!("matmul: operands need at least 2 dims, got {:?}", dims);
        }
        let mut offsets = vec![l.start_offset()];
        for d in 0..r - 2 {
            let mut next = Vec::with_capacity(offsets.len() * dims[d]);
            for &o in &offsets {
                for i in 0..dims[d] {
                    next.push(o + i * st[d]);
                }
            }
            offsets = next;
        }
        Ok(Self {
            offsets,
            rows: dims[r - 2],
            cols: dims[r - 1],
            rs: st[r - 2],
            cs: st[r - 1],
        })
    }
    fn mat<'a>(&self, data: &'a [f32], i: usize) -> Mat<'a> {
        Mat {
            data: &data[self.offsets[i]..],
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst[i] = a[i] @ b[i]` for every batch index, dst contiguous [batch, m, n].
fn bmm(a_data: &[f32], a: &Batched, b_data: &[f32], b: &Batched) -> Vec<f32> {
    let (m, n) = (a.rows, b.cols);
    let batch = a.offsets.len();
    assert_eq!(b.offsets.len(), batch, "bmm: batch sizes differ");
    let mut dst = Output::new(batch * m * n);
    if m * n == 0 {
        // SAFETY: there are no elements.
        return unsafe { dst.assume_init() };
    }
    let threads = if batch < num_threads() {
        num_threads()
    } else {
        1
    };
    dst.slots()
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(i, d)| matmul_into(d, n, a.mat(a_data, i), b.mat(b_data, i), threads));
    // SAFETY: each of the `batch` chunks is an m x n product with row stride n, written in full.
    unsafe { dst.assume_init() }
}

fn f32_data(s: &CpuStorage) -> Result<&[f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("matmul: expected f32 storage"),
    }
}

struct MatMulOp {
    need_a: bool,
    need_b: bool,
}

fn check(al: &Layout, bl: &Layout) -> Result<Shape> {
    let (ad, bd) = (al.dims(), bl.dims());
    let r = ad.len();
    if r < 2 || bd.len() != r || ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
        candle_core::bail!(
            "matmul: incompatible shapes {ad:?} @ {bd:?} (same batch dims, inner dims equal)"
        );
    }
    let mut out = ad.to_vec();
    out[r - 1] = bd[r - 1];
    Ok(Shape::from(out))
}

impl CustomOp2 for MatMulOp {
    fn name(&self) -> &'static str {
        "maxsup-batched-matmul"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = check(al, bl)?;
        let y = bmm(
            f32_data(a)?,
            &Batched::from_layout(al)?,
            f32_data(b)?,
            &Batched::from_layout(bl)?,
        );
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (sa, la) = a.storage_and_layout();
        let (sb, lb) = b.storage_and_layout();
        let (sd, ld) = dy.storage_and_layout();
        let (Storage::Cpu(sa), Storage::Cpu(sb), Storage::Cpu(sd)) = (&*sa, &*sb, &*sd) else {
            candle_core::bail!("matmul: backward expects CPU tensors");
        };
        let (ad, bd) = (f32_data(sa)?, f32_data(sb)?);
        let dd = contiguous_f32(sd, ld, "matmul output gradient")?;
        let (ba, bb, bdy) = (
            Batched::from_layout(la)?,
            Batched::from_layout(lb)?,
            Batched::from_layout(ld)?,
        );
        let bdy = Batched {
            offsets: bdy.offsets.iter().map(|o| o - ld.start_offset()).collect(),
            ..bdy
        };
        // dA = dY @ B^T, dB = A^T @ dY.
        let da = if self.need_a {
            Some(tensor_from_vec(bmm(dd, &bdy, bd, &bb.t()), a.shape())?)
        } else {
            None
        };
        let db = if self.need_b {
            Some(tensor_from_vec(bmm(ad, &ba.t(), dd, &bdy), b.shape())?)
        } else {
            None
        };
        Ok((da, db))
    }
}

/// `a @ b` for tensors of equal rank >= 2 with identical batch dims (no broadcasting), like
/// `Tensor::matmul`, differentiable.
///
/// f32 on CPU runs the batch-parallel custom op (inputs may be strided views such as `k.t()`);
/// anything else falls back to `Tensor::matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !cpu_only(&[a, b]) || a.rank() < 2 {
        return a.matmul(b);
    }
    check(a.layout(), b.layout())?;
    a.apply_op2(
        b,
        MatMulOp {
            need_a: a.track_op(),
            need_b: b.track_op(),
        },
    )
}
