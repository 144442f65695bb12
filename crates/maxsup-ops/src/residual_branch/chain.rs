//! A chain of transformer sub-blocks as one graph node: the sub-blocks run one after another on
//! detached inputs ([`BranchTape::forward`]), and one node carries the last output, with the
//! chain's input and two packed parameter vectors as its operands. Its backward runs the
//! sub-blocks' backward in reverse, handing each input gradient to the sub-block before it
//! directly: where each sub-block is a node of its own, candle's backward gives every boundary
//! a zero-filled gradient and an add (`GradStore::or_insert`) and every node's forward a copy of
//! its output (its custom op returns owned storage); a chain has one of each. For DeiT-S at
//! batch 256 in bf16 the 23 boundaries between its 24 sub-blocks hold 38.7 MB each.

use super::graph::{BranchGrads, BranchTape};
use super::{BranchWeights, Inner};
use crate::graph_node::{packed, precomputed_fwd3, PrecomputedOutput};
use candle_core::{CustomOp3, Result, Tensor};

/// One sub-block of a chain, shapes already checked.
pub(super) struct Link<'a> {
    pub(super) weights: &'a BranchWeights<'a>,
    pub(super) inner: Inner,
    pub(super) scale: Option<&'a Tensor>,
}

/// The sub-blocks `links` one after another on `x` as one graph node (see the module doc).
pub(super) fn chain(x: &Tensor, links: &[Link]) -> Result<Tensor> {
    if links.is_empty() {
        candle_core::bail!("residual_branches graph node: no sub-block to run");
    }
    let mut tapes = Vec::with_capacity(links.len());
    let mut h = x.contiguous()?.detach();
    for link in links {
        let (tape, y) = BranchTape::forward(&h, link.weights, link.inner, link.scale)?;
        tapes.push(tape);
        h = y;
    }
    let tracked = links
        .iter()
        .any(|l| l.weights.all().iter().any(|t| t.track_op()));
    if !x.track_op() && !tracked {
        // Nothing to differentiate (evaluation): no node, no copy of the output.
        return Ok(h);
    }
    let norms = packed(
        links
            .iter()
            .flat_map(|l| [l.weights.norm_weight, l.weights.norm_bias]),
    )?;
    let lins = packed(links.iter().flat_map(|l| {
        let w = l.weights;
        [w.in_weight, w.in_bias, w.out_weight, w.out_bias]
    }))?;
    let op = ChainGraphOp {
        output: PrecomputedOutput::new("residual branches", h),
        tapes,
        need_dx: x.track_op(),
    };
    x.contiguous()?.apply_op3(&norms, &lins, op)
}

/// Operands `(x, [norm weight | norm bias] per sub-block (f32), [in weight | in bias | out
/// weight | out bias] per sub-block (the activations' dtype))`: two packed vectors because the
/// norms' parameters stay f32 next to bf16 linear weights under mixed precision.
struct ChainGraphOp {
    /// The forward's result, handed to candle once (the node's output) and then dropped.
    output: PrecomputedOutput,
    tapes: Vec<BranchTape>,
    need_dx: bool,
}

impl CustomOp3 for ChainGraphOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-branches-graph"
    }

    precomputed_fwd3!(output);

    fn bwd(
        &self,
        _x: &Tensor,
        _norms: &Tensor,
        _lins: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut d = dy.clone();
        let mut grads = Vec::with_capacity(self.tapes.len());
        // Only the parameter gradients are kept to the end; each input gradient lives until the
        // sub-block before has used it, as in candle's own backward.
        for tape in self.tapes.iter().rev() {
            let BranchGrads { dx, norm, lin } = tape.backward(&d)?;
            d = dx;
            grads.push((norm, lin));
        }
        grads.reverse();
        Ok((
            self.need_dx.then_some(d),
            Some(packed(grads.iter().flat_map(|(norm, _)| norm))?),
            Some(packed(grads.iter().flat_map(|(_, lin)| lin))?),
        ))
    }
}
