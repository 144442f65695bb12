//! A ResNet residual block (torchvision's `BasicBlock` / `Bottleneck`) as one graph node:
//! `relu(bn_k(conv_k(... relu(bn_1(conv_1(x))) ...)) + shortcut(x))`, the shortcut being `x` or
//! `bn(conv(x))`.
//!
//! Composed from separate ops, every edge of the block's graph (each conv output, each
//! BatchNorm+ReLU output, the shortcut's) gets its gradient from candle's backward as a zero
//! tensor plus the gradient (`GradStore::or_insert`, candle 0.11.1): a fill and an add over an
//! activation-sized tensor per edge, six to eight per Bottleneck; in channels-last every op adds
//! two permutation edges more, whose adds transpose. As one node the block has one activation
//! edge (`x`) and two parameter edges (its BatchNorm and its conv parameters, each packed into
//! one vector); the node's backward runs the same backward kernels in reverse and hands back
//! `dx` with the shortcut's gradient added. Values and gradients equal the composed ops' bit for
//! bit (same kernels, and `0 + g = g`). The forward updates the running statistics as the
//! composed ops do.
//!
//! [`residual_blocks`] goes further: a chain of blocks (a whole ResNet body) is one node, so
//! no block boundary has an edge at all (`graph.rs`).
//!
//! [`residual_block`] and [`residual_blocks`] take the node in train mode on CUDA; elsewhere
//! (the CPU, whose fused kernels make the edges cheap relative to the convolutions, and
//! evaluation) they run the composed ops.

mod graph;
mod tape;

use crate::dispatch::fused;
use crate::layout;
use candle_core::{Result, Tensor, Var};

/// One convolution of a block: `weight` `[O, C, K, K]` in the activations' dtype, no bias.
/// With `blur` (`[C, 1, 3, 3]`, FFCV's BlurPool) a depthwise stride-1 padding-1 filter runs
/// first; it gets no gradient.
#[derive(Clone, Debug)]
pub struct BlockConv {
    pub weight: Tensor,
    pub stride: usize,
    pub padding: usize,
    pub blur: Option<Tensor>,
}

/// One BatchNorm of a block: f32 affine parameters and running statistics (`[C]` each).
#[derive(Clone, Debug)]
pub struct BlockNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
}

/// A conv and the BatchNorm after it.
pub type BlockPair = (BlockConv, BlockNorm);

/// A residual block: `main` is its conv-BatchNorm pairs in order (two for a BasicBlock, three
/// for a Bottleneck), ReLU after each but the last, whose output is added to the shortcut
/// (`x`, or `shortcut`'s conv-BatchNorm of `x`) before the final ReLU.
#[derive(Clone, Debug)]
pub struct ResidualBlock {
    pub main: Vec<BlockPair>,
    pub shortcut: Option<BlockPair>,
    /// BatchNorm's running-statistics momentum and epsilon (PyTorch: 0.1, 1e-5).
    pub momentum: f64,
    pub eps: f64,
}

impl ResidualBlock {
    fn pairs(&self) -> impl Iterator<Item = &BlockPair> {
        self.main.iter().chain(self.shortcut.iter())
    }

    /// The last main pair and the ones before it.
    fn split_last(&self) -> Result<(&BlockPair, &[BlockPair])> {
        match self.main.split_last() {
            Some(split) => Ok(split),
            None => candle_core::bail!("residual_block: the block has no conv-BatchNorm pair"),
        }
    }
}

/// The block on `x` (`[N, C, H, W]`, NCHW or channels-last). In train mode the running
/// statistics are updated. One graph node in train mode on CUDA (see the module doc), the
/// composed ops otherwise; the same values and gradients either way.
pub fn residual_block(x: &Tensor, block: &ResidualBlock, train: bool) -> Result<Tensor> {
    residual_blocks(x, std::slice::from_ref(block), train)
}

/// The blocks one after another on `x` (`[N, C, H, W]`, NCHW or channels-last): one graph
/// node for the whole chain in train mode on CUDA (see the module doc), the composed ops
/// otherwise; the same values, running statistics and gradients either way. No block: `x`.
pub fn residual_blocks(x: &Tensor, blocks: &[ResidualBlock], train: bool) -> Result<Tensor> {
    if train && x.device().is_cuda() && graph_applies_all(x, blocks) {
        return graph::graph(x, blocks);
    }
    composed_chain(x, blocks, train)
}

/// The block on `x` in the channels-last op layout: `x` is `[N, H, W, C]` contiguous (see
/// [`crate::nhwc_view`]), and so is the result. The same block as [`residual_block`] on the
/// channels-last `[N, C, H, W]` view; what it saves is the two permutation nodes at each end,
/// so a chain of blocks passes activations with no permutation between them (on CUDA, in train
/// mode, two transposing passes over an activation gradient per block boundary less).
pub fn residual_block_nhwc(x: &Tensor, block: &ResidualBlock, train: bool) -> Result<Tensor> {
    residual_blocks_nhwc(x, std::slice::from_ref(block), train)
}

/// [`residual_blocks`] in the channels-last op layout (`[N, H, W, C]` contiguous in and out,
/// as [`residual_block_nhwc`]).
pub fn residual_blocks_nhwc(x: &Tensor, blocks: &[ResidualBlock], train: bool) -> Result<Tensor> {
    check_op_layout(x)?;
    if train && x.device().is_cuda() && graph_applies_all(x, blocks) {
        return graph::graph_in_op_layout(x, true, blocks);
    }
    let y = composed_chain(&layout::from_nhwc(x)?, blocks, train)?;
    layout::nhwc(&y)?.contiguous()
}

fn composed_chain(x: &Tensor, blocks: &[ResidualBlock], train: bool) -> Result<Tensor> {
    let mut y = x.clone();
    for b in blocks {
        y = residual_block_composed(&y, b, train)?;
    }
    Ok(y)
}

fn check_op_layout(x: &Tensor) -> Result<()> {
    if x.rank() != 4 || !x.is_contiguous() {
        candle_core::bail!(
            "residual_block_nhwc: expects a contiguous [N, H, W, C] tensor, got {:?} with strides \
             {:?}",
            x.shape(),
            x.stride()
        );
    }
    Ok(())
}

/// The block as separate ops (`conv2d`, `batch_norm2d_relu`, `batch_norm2d`,
/// `batch_norm2d_add_relu`): the oracle of the graph node, and the path off CUDA.
pub fn residual_block_composed(x: &Tensor, block: &ResidualBlock, train: bool) -> Result<Tensor> {
    let ((last_conv, last_norm), rest) = block.split_last()?;
    let (m, eps) = (block.momentum, block.eps);
    let mut h = x.clone();
    for (c, n) in rest {
        let y = conv_composed(&h, c)?;
        h = crate::batch_norm2d_relu(
            &y,
            &n.weight,
            &n.bias,
            &n.running_mean,
            &n.running_var,
            train,
            m,
            eps,
        )?;
    }
    let y = conv_composed(&h, last_conv)?;
    let identity = match &block.shortcut {
        Some((c, n)) => crate::batch_norm2d(
            &conv_composed(x, c)?,
            &n.weight,
            &n.bias,
            &n.running_mean,
            &n.running_var,
            train,
            m,
            eps,
        )?,
        None => x.clone(),
    };
    let n = last_norm;
    crate::batch_norm2d_add_relu(
        &y,
        &identity,
        &n.weight,
        &n.bias,
        &n.running_mean,
        &n.running_var,
        train,
        m,
        eps,
    )
}

/// [`residual_blocks`] in train mode through the graph node whatever the device (doc-hidden:
/// the CPU tests run it against [`residual_block_composed`]).
#[doc(hidden)]
pub fn residual_blocks_graph(x: &Tensor, blocks: &[ResidualBlock]) -> Result<Tensor> {
    check_graph_applies(x, blocks)?;
    graph::graph(x, blocks)
}

fn check_graph_applies(x: &Tensor, blocks: &[ResidualBlock]) -> Result<()> {
    if !graph_applies_all(x, blocks) {
        candle_core::bail!(
            "residual_blocks graph node: needs at least one block, the fused kernels' dtypes and \
             devices (and, on the CPU, no BlurPool: its grouped conv has no CPU kernel)"
        );
    }
    Ok(())
}

/// [`residual_blocks_nhwc`] in train mode through the graph node whatever the device
/// (doc-hidden, for the CPU tests).
#[doc(hidden)]
pub fn residual_blocks_nhwc_graph(x: &Tensor, blocks: &[ResidualBlock]) -> Result<Tensor> {
    check_op_layout(x)?;
    check_graph_applies(x, blocks)?;
    graph::graph_in_op_layout(x, true, blocks)
}

fn conv_composed(x: &Tensor, c: &BlockConv) -> Result<Tensor> {
    let blurred;
    let x = match &c.blur {
        Some(f) => {
            blurred = crate::conv2d(x, &f.detach(), None, 1, 1, 1, f.dim(0)?)?;
            &blurred
        }
        None => x,
    };
    crate::conv2d(x, &c.weight, None, c.stride, c.padding, 1, 1)
}

/// Whether the node takes the chain: at least one block, each of which [`graph_applies`].
fn graph_applies_all(x: &Tensor, blocks: &[ResidualBlock]) -> bool {
    !blocks.is_empty() && blocks.iter().all(|b| graph_applies(x, b))
}

/// Whether the node's fused kernels take every operand: conv weights in the input's dtype,
/// f32 BatchNorm tensors, one device, and BlurPool's grouped conv only on CUDA.
fn graph_applies(x: &Tensor, b: &ResidualBlock) -> bool {
    let mut data = vec![x];
    let mut params = vec![];
    for (c, n) in b.pairs() {
        data.push(&c.weight);
        data.extend(c.blur.as_ref());
        params.extend([&n.weight, &n.bias]);
        params.extend([n.running_mean.as_tensor(), n.running_var.as_tensor()]);
    }
    let blur_ok = x.device().is_cuda() || b.pairs().all(|(c, _)| c.blur.is_none());
    x.rank() == 4 && !b.main.is_empty() && blur_ok && fused(&data, &params)
}
