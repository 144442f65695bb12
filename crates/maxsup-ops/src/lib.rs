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
//!
//! | function | replaces | why it is faster |
//! |---|---|---|
//! | [`conv2d`] | `Tensor::conv2d` | im2col + GEMM forward, GEMM input/weight gradients (candle: direct-loop `conv_transpose2d`), no input gradient for untracked inputs, 1x1 convs as plain GEMMs, parallel over images |
//! | [`batch_norm2d`] | composed BatchNorm | one pass each for statistics, normalisation and backward; PyTorch running-stat rule |
//! | [`relu`], [`gelu_erf`] | `Tensor::relu`, `Tensor::gelu_erf` | one-pass backward (candle: 4 and ~10 passes) |
//! | [`max_pool2d`] | composed max-pool | arg-max recorded in the forward, scatter backward |
//! | [`layer_norm`], [`softmax_last_dim`] | candle's fused ops (no backward) | fused forward and backward |
//! | [`linear`] | `candle_nn::Linear` | one GEMM over flattened leading dims, bias folded in, direct dx/dW/db |
//! | [`matmul`] | batched `Tensor::matmul` | parallel over the batch (attention: B x heads small GEMMs) |
//! | [`attention_qkv`] | reshape/permute/copies + 2 matmuls + softmax | one op from the fused qkv projection, q/k/v read in place |
//! | [`batch_norm2d_relu`], [`add_relu`] | BatchNorm or add, then ReLU | one pass each way, one fewer gradient tensor |
//! | [`batch_norm2d_add_relu`] | BatchNorm, add, ReLU (a ResNet block's end) | on CUDA one pass forward: the BatchNorm output is never stored |
//! | [`residual_block`], [`residual_blocks`] | a ResNet block's (or a chain of blocks') convs, BatchNorms, ReLUs and shortcuts | on CUDA one graph node in train mode: for a block, one activation gradient zero-filled and added instead of six to eight; for a chain (a whole ResNet body), one in all; [`residual_block_nhwc`] / [`residual_blocks_nhwc`] take and return channels-last activations as `[N, H, W, C]`, with no permutation node |
//! | [`residual_mlp`], [`residual_attention`], [`residual_branches`] | LayerNorm, two linears, GELU or attention, stochastic-depth scale and residual add (one sub-block, or a chain of them) | one graph node: candle's backward zero-fills and adds one activation gradient instead of up to eight per sub-block; on CUDA a chain (a whole transformer body) has one in all |

mod attention;
mod batch_norm;
#[doc(hidden)]
pub mod bench_hooks;
mod conv;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod dispatch;
mod fall_through;
mod fused_attention;
mod gelu;
mod graph_node;
#[doc(hidden)]
pub mod kernel_geometry;
mod kernel_time;
mod layer_norm;
mod layout;
mod linear;
mod linear_bias;
mod matmul;
mod max_pool;
pub mod multi_tensor;
mod qkv_heads;
mod read_back;
pub mod reference;
mod relu;
mod residual_block;
mod residual_branch;
mod residual_out;
pub use residual_out::scale_per_sample;
mod side_output;
mod softmax;
pub mod softmax_loss;
mod staged_upload;
mod sync_batch_norm;

pub use attention::{attention_qkv, attention_qkv_composed};
pub use batch_norm::{batch_norm2d, batch_norm2d_add_relu, batch_norm2d_relu};
pub use conv::conv2d;
#[cfg(feature = "cuda")]
pub use cuda::{
    configure_device, cudnn_benchmark, cudnn_benchmark_fallbacks, kernel_times, peak_memory,
    release_conv_workspaces, set_cudnn_benchmark, set_kernel_timing, set_tf32, tf32,
};
pub use fused_attention::{fused_attention, set_fused_attention};
pub use gelu::gelu_erf;
pub use kernel_time::KernelTime;
pub use layer_norm::layer_norm;
pub use layout::{channels_last_view, is_channels_last, nhwc_view, to_channels_last};
pub use linear::linear;
pub use matmul::matmul;
pub use max_pool::max_pool2d;
pub use read_back::{PendingRead, ReadBack};
pub use relu::{add_relu, relu};
pub use residual_block::{
    residual_block, residual_block_composed, residual_block_nhwc, residual_blocks,
    residual_blocks_graph, residual_blocks_nhwc, residual_blocks_nhwc_graph, BlockConv, BlockNorm,
    BlockPair, ResidualBlock,
};
pub use residual_branch::{
    residual_attention, residual_attention_composed, residual_attention_graph, residual_branches,
    residual_branches_graph, residual_mlp, residual_mlp_composed, residual_mlp_graph, Branch,
    BranchKind, BranchWeights,
};
pub use softmax::softmax_last_dim;
pub use staged_upload::{StagedUpload, UploadDType};
pub use sync_batch_norm::{sync_batch_norm, ReplicaSum, SyncBatchNormGuard};
