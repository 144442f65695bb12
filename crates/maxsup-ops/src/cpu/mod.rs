//! f32 CPU kernels behind the public ops, and the glue that moves tensors in and out of them.

pub mod conv;
pub mod gemm;
pub mod im2col;
pub mod lanes;
pub mod slices;
pub mod uninit;
