//! A chain of residual blocks as one graph node: the blocks run one after another on detached
//! inputs ([`BlockTape::forward`]), and one node carries the last output, with the chain's input
//! and two packed parameter vectors as its operands. Its backward runs the blocks' backward in
//! reverse, handing each block's input gradient to the block before it directly: where each
//! block is a node of its own, candle's backward gives every block boundary a zero-filled
//! gradient and an add (`GradStore::or_insert`) and every node's forward a copy of its output
//! (its custom op returns owned storage); a chain has one of each. For ResNet-50 at batch 256
//! in bf16 the 15 boundaries between its 16 blocks hold 2.8 GB of activations: six passes over
//! them, about 17 GB of memory traffic per step, that the chain does not make.

use super::tape::{BlockTape, UnitGrads};
use super::ResidualBlock;
use crate::graph_node::{packed, precomputed_fwd3, PrecomputedOutput};
use crate::layout;
use candle_core::{CustomOp3, Result, Tensor};

/// The blocks as one node on the `[N, C, H, W]` tensor `x` (NCHW or channels-last).
pub(super) fn graph(x: &Tensor, blocks: &[ResidualBlock]) -> Result<Tensor> {
    let nhwc = layout::is_channels_last(x);
    let x_op = match nhwc {
        true => layout::nhwc(x)?,
        false => x.contiguous()?,
    };
    let y = graph_in_op_layout(&x_op, nhwc, blocks)?;
    match nhwc {
        true => layout::from_nhwc(&y),
        false => Ok(y),
    }
}

/// The blocks as one node (see the module doc) on `x_op`, contiguous in the ops' layout
/// (`[N, H, W, C]` when `nhwc`), returning the last output in the same layout; shapes are
/// checked by the kernels it runs.
pub(super) fn graph_in_op_layout(
    x_op: &Tensor,
    nhwc: bool,
    blocks: &[ResidualBlock],
) -> Result<Tensor> {
    if blocks.is_empty() {
        candle_core::bail!("residual_blocks graph node: no block to run");
    }
    let mut tapes = Vec::with_capacity(blocks.len());
    let mut h = x_op.detach();
    for b in blocks {
        let (tape, y) = BlockTape::forward(&h, nhwc, b)?;
        tapes.push(tape);
        h = y;
    }
    let pairs = || blocks.iter().flat_map(|b| b.pairs());
    let tracked =
        pairs().any(|(c, n)| [&c.weight, &n.weight, &n.bias].iter().any(|t| t.track_op()));
    if !x_op.track_op() && !tracked {
        // Nothing to differentiate: no node, no copy of the output.
        return Ok(h);
    }
    let norms = packed(pairs().flat_map(|(_, n)| [&n.weight, &n.bias]))?;
    let convs = packed(pairs().map(|(c, _)| &c.weight))?;
    let op = ChainGraphOp {
        output: PrecomputedOutput::new("residual blocks", h),
        blocks: tapes,
        need_dx: x_op.track_op(),
    };
    x_op.apply_op3(&norms, &convs, op)
}

/// Operands `(x in the op layout, [gamma | beta per pair] (f32), [conv weights] (the
/// activations' dtype))`, the pairs block by block, each block's `main` then `shortcut`.
struct ChainGraphOp {
    output: PrecomputedOutput,
    blocks: Vec<BlockTape>,
    need_dx: bool,
}

impl CustomOp3 for ChainGraphOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-blocks-graph"
    }

    precomputed_fwd3!(output);

    fn bwd(
        &self,
        _x: &Tensor,
        _norms: &Tensor,
        _convs: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut d = dy.contiguous()?;
        let mut dx = None;
        let mut per_block: Vec<Vec<UnitGrads>> = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate().rev() {
            // A block's output is the next block's input; the last one's is the node's.
            let out = self.blocks.get(i + 1).map_or(y, |next| next.input());
            let first = i == 0;
            let (d_in, grads) = block.backward(out, &d, !first || self.need_dx)?;
            per_block.push(grads);
            match (first, d_in) {
                (false, Some(d_in)) => d = d_in,
                (false, None) => {
                    candle_core::bail!("residual_blocks: block {i} gave no input gradient")
                }
                (true, d_in) => dx = d_in,
            }
        }
        per_block.reverse();
        let grads = || per_block.iter().flatten();
        Ok((
            dx,
            Some(packed(grads().flat_map(|g| [&g.dgamma, &g.dbeta]))?),
            Some(packed(grads().map(|g| &g.dweight))?),
        ))
    }
}
