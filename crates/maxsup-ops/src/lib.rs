//! Differentiable building blocks that candle 0.11 lacks or implements without backward.
//!
//! Every function here keeps candle's autograd: its output participates in `Tensor::backward`.
//! candle's fused `LayerNorm` and `softmax_last_dim` have no backward (gradients are silently
//! dropped), and its `max_pool2d` backward only supports `kernel == stride`; models in this
//! workspace must call these functions instead.
//!
//! For f32 tensors on the CPU the functions run fused custom ops (`CustomOp*` with forward and
//! backward) built on GEMM and parallel over the rayon threads; for other dtypes or devices they
//! run the composed implementations in [`reference`], which are also the test oracle.

mod batch_norm;
mod conv;
mod cpu;
mod gelu;
mod layer_norm;
mod linear;
mod matmul;
mod max_pool;
pub mod reference;
mod relu;
mod softmax;

pub use batch_norm::batch_norm2d;
pub use conv::conv2d;
pub use gelu::gelu_erf;
pub use layer_norm::layer_norm;
pub use matmul::matmul;
pub use max_pool::max_pool2d;
pub use linear::linear;
pub use relu::relu;
pub use softmax::softmax_last_dim;
