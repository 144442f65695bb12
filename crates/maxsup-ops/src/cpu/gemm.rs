//! Safe-ish wrapper over the `gemm` crate (the GEMM candle itself uses) for f32 matrices given
//! as slices with explicit row/column strides.

use std::mem::MaybeUninit;

/// A strided f32 matrix view: element (r, c) lives at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major (C-order) `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn max_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
        }
    }
}

/// `dst (row-major m x n, row stride dst_rs) = a @ b (+ dst when accumulate)`.
///
/// `threads == 1` runs on the calling thread: callers normally parallelise over independent
/// blocks (images), which beats splitting each GEMM on 2 cores; they pass more threads only when
/// there are fewer blocks than threads.
pub fn matmul(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, threads: usize) {
    check(dst.len(), dst_rs, a, b);
    // SAFETY: `check` bounds every index; `dst` is initialised, so reading it to accumulate is
    // fine, and it does not alias `a` or `b` (it is borrowed mutably).
    unsafe { gemm_raw(dst.as_mut_ptr(), dst_rs, a, b, accumulate, threads) }
}

/// `dst = a @ b` into unwritten slots: writes element (r, c) at `r * dst_rs + c` for every
/// `r < m`, `c < n`, and reads none of `dst` (so for `dst_rs == n` it initialises all of it).
pub fn matmul_into(dst: &mut [MaybeUninit<f32>], dst_rs: usize, a: Mat, b: Mat, threads: usize) {
    check(dst.len(), dst_rs, a, b);
    // SAFETY: as in `matmul`; with `accumulate == false` the gemm crate only writes `dst`.
    unsafe { gemm_raw(dst.as_mut_ptr().cast(), dst_rs, a, b, false, threads) }
}

/// Panics unless `a @ b` fits a destination of `dst_len` elements with row stride `dst_rs` and
/// every operand index is in bounds.
fn check(dst_len: usize, dst_rs: usize, a: Mat, b: Mat) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_len >= (m - 1) * dst_rs + n,
        "gemm: destination too small"
    );
    if k > 0 {
        assert!(
            a.max_index() < a.data.len() && b.max_index() < b.data.len(),
            "gemm: operand out of bounds"
        );
    }
}

/// # Safety
/// `dst` must be valid for writes (and for reads when `accumulate`) at every `r * dst_rs + c`,
/// `r < a.rows`, `c < b.cols`, and not alias the operands; the operands must be in bounds
/// ([`check`]).
unsafe fn gemm_raw(dst: *mut f32, dst_rs: usize, a: Mat, b: Mat, accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    // SAFETY: in bounds by the contract.
                    unsafe { dst.add(r * dst_rs + c).write(0.0) };
                }
            }
        }
        return;
    }
    // SAFETY: the caller's contract covers every index the gemm crate touches.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        )
    }
}
