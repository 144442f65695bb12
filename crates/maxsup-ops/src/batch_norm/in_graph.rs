//! Train-mode BatchNorm inside a graph node that runs several ops (`crate::residual_block`):
//! the input already in the ops' layout (contiguous NCHW, or the `[N, H, W, C]` permutation of
//! a channels-last tensor), no candle node, and a backward the node calls itself. The kernels,
//! the statistics and the running-statistics update are the ones [`crate::batch_norm2d`] runs.

use super::add_relu::BatchNormAddReluOp;
use super::{dims, normalisation_backward, op_layout_statistics, BatchNormTrainOp};
use candle_core::{Result, Tensor, Var};

/// What follows the normalisation in the same pass.
pub(crate) enum NormTail<'a> {
    None,
    Relu,
    /// `relu(bn(x) + residual)`, the residual in the ops' layout.
    AddRelu(&'a Tensor),
}

/// One train-mode BatchNorm's saved state: its batch statistics and what its backward needs.
pub(crate) struct NormInGraph {
    stats: Tensor,
    eps: f64,
    synced: bool,
    nhwc: bool,
    relu: bool,
}

impl NormInGraph {
    /// `tail(bn(x))` with the batch statistics of `x`; updates the running statistics.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        x: &Tensor,
        nhwc: bool,
        (weight, bias): (&Tensor, &Tensor),
        running: (&Var, &Var),
        momentum: f64,
        eps: f64,
        tail: NormTail,
    ) -> Result<(Tensor, Self)> {
        let (n, c, hw) = dims(x.shape(), nhwc)?;
        if n * hw < 2 {
            candle_core::bail!(
                "batch_norm2d: train mode needs more than one value per channel, got input {:?}",
                x.shape()
            );
        }
        let (stats, synced) = op_layout_statistics(x, nhwc, running, momentum, n * hw)?;
        if weight.elem_count() != c || bias.elem_count() != c {
            candle_core::bail!(
                "batch_norm2d: weight {:?} / bias {:?} for {c} channels",
                weight.shape(),
                bias.shape()
            );
        }
        let relu = !matches!(tail, NormTail::None);
        let y = match tail {
            NormTail::AddRelu(residual) => {
                let wb = Tensor::cat(&[weight.flatten_all()?, bias.flatten_all()?], 0)?;
                let op = BatchNormAddReluOp {
                    stats: stats.clone(),
                    eps,
                    synced,
                    nhwc,
                };
                x.apply_op3_no_bwd(&wb, &residual.contiguous()?, &op)?
            }
            NormTail::None | NormTail::Relu => {
                let op = BatchNormTrainOp {
                    stats: stats.clone(),
                    eps,
                    relu,
                    synced,
                    nhwc,
                };
                let (w, b) = (weight.contiguous()?, bias.contiguous()?);
                x.apply_op3_no_bwd(&w, &b, &op)?
            }
        };
        let saved = Self {
            stats,
            eps,
            synced,
            nhwc,
            relu,
        };
        Ok((y, saved))
    }

    /// `(dx, dweight, dbias, g)` from the output gradient `dy`, with `x` the forward's input,
    /// `y` its output and `g` the gradient reaching the normalisation (`dy` masked by a fused
    /// ReLU): also the residual's gradient of an add-ReLU tail.
    pub(crate) fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let g = match self.relu {
            true => crate::relu::relu_backward(y, dy)?,
            false => dy.contiguous()?,
        };
        let (dx, dw, db) =
            normalisation_backward(x, weight, &g, &self.stats, self.eps, self.synced, self.nhwc)?;
        Ok((dx, dw, db, g))
    }
}
