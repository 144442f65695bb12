//! The CUDA side of the ops (feature `cuda`): kernels compiled by `build.rs` from
//! `kernels/ops.cu`, cuDNN convolutions, and the per-device settings of a training run.
//!
//! Everything here runs on candle's stream of the tensor's device, so it is ordered with candle's
//! own kernels without extra synchronisation.

pub(crate) mod attention;
pub(crate) mod attention_bwd;
pub(crate) mod batch_norm;
pub(crate) mod bias;
pub(crate) mod captured;
mod column_sums;
mod conv;
mod elementwise;
pub(crate) mod kernel_times;
mod launch;
pub(crate) mod loss;
mod multi_tensor;
pub(crate) mod pinned;
pub(crate) mod pool;
pub(crate) mod qkv_heads;
pub(crate) mod read_back;
pub(crate) mod residual_out;
pub(crate) mod rows;
mod settings;

pub use conv::release_workspaces as release_conv_workspaces;
pub(crate) use conv::{conv2d_backward, conv2d_forward, ConvShape};
pub(crate) use elementwise::{map1, map2};
pub use kernel_times::{kernel_times, set_kernel_timing};
pub(crate) use launch::*;
pub(crate) use multi_tensor::multi_tensor;
pub use settings::{
    configure_device, cudnn_benchmark, cudnn_benchmark_fallbacks, peak_memory, set_cudnn_benchmark,
    set_tf32, tf32,
};
