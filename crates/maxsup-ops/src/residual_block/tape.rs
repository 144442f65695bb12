//! What the graph node keeps of each block it ran (its conv-BatchNorm pairs' inputs, conv
//! outputs and normalisation statistics), and each block's backward from it: the same backward
//! kernels as the composed ops, in reverse.

use super::{BlockPair, ResidualBlock};
use crate::batch_norm::{NormInGraph, NormTail};
use crate::conv::ConvInGraph;
use candle_core::{Result, Tensor};

/// One conv-BatchNorm pair as the node ran it: what its backward needs.
struct Unit {
    conv: ConvInGraph,
    /// BlurPool: its conv and filter (op layout), and the blurred input.
    blur: Option<(ConvInGraph, Tensor, Tensor)>,
    /// The pair's input (op layout): also the previous pair's output.
    input: Tensor,
    /// The conv weight in the op's layout.
    weight: Tensor,
    conv_out: Tensor,
    norm: NormInGraph,
    norm_weight: Tensor,
}

/// A pair's parameter gradients: its conv weight's (`[O, C, K, K]`), its BatchNorm weight's
/// and bias's. The chain keeps these for every pair until its backward ends, so they hold
/// nothing activation-sized.
pub(super) struct UnitGrads {
    pub(super) dweight: Tensor,
    pub(super) dgamma: Tensor,
    pub(super) dbeta: Tensor,
}

/// The activation-sized gradients a pair's backward hands on: its input's (when asked) and the
/// one reaching its normalisation (the residual's under an add-ReLU tail). The block drops each
/// as soon as the next pair has used it, as candle's own backward does.
struct Flow {
    dx: Option<Tensor>,
    g: Tensor,
}

impl Unit {
    /// The pair on `h` (op layout, detached); returns it and its output.
    fn forward(
        h: &Tensor,
        (c, n): &BlockPair,
        nhwc: bool,
        b: &ResidualBlock,
        tail: NormTail,
    ) -> Result<(Self, Tensor)> {
        let blur = match &c.blur {
            Some(f) => {
                let conv = ConvInGraph::new(1, 1, f.dim(0)?, nhwc);
                let filter = conv.weight(&f.detach())?;
                let blurred = conv.forward(h, &filter)?;
                Some((conv, filter, blurred))
            }
            None => None,
        };
        let conv = ConvInGraph::new(c.stride, c.padding, 1, nhwc);
        let weight = conv.weight(&c.weight.detach())?;
        let conv_in = blur.as_ref().map_or(h, |(_, _, blurred)| blurred);
        let conv_out = conv.forward(conv_in, &weight)?;
        let norm_weight = n.weight.detach();
        let (y, norm) = NormInGraph::forward(
            &conv_out,
            nhwc,
            (&norm_weight, &n.bias.detach()),
            (&n.running_mean, &n.running_var),
            b.momentum,
            b.eps,
            tail,
        )?;
        let unit = Self {
            conv,
            blur,
            input: h.clone(),
            weight,
            conv_out,
            norm,
            norm_weight,
        };
        Ok((unit, y))
    }

    /// The pair's gradients from its output `y` and output gradient `dy`.
    fn backward(&self, y: &Tensor, dy: &Tensor, need_dx: bool) -> Result<(UnitGrads, Flow)> {
        let (dc, dgamma, dbeta, g) =
            self.norm
                .backward(&self.conv_out, &self.norm_weight, y, dy)?;
        let conv_in = self.blur.as_ref().map_or(&self.input, |(_, _, b)| b);
        let (dx, dw) = self
            .conv
            .backward(conv_in, &self.weight, &dc, (need_dx, true))?;
        let dx = match (&self.blur, dx) {
            (Some((conv, filter, _)), Some(d)) => {
                conv.backward(&self.input, filter, &d, (true, false))?.0
            }
            (_, dx) => dx,
        };
        let Some(dw) = dw else {
            candle_core::bail!("residual_block: the conv backward gave no weight gradient")
        };
        let grads = UnitGrads {
            dweight: self.conv.weight_grad_oihw(&dw)?,
            dgamma,
            dbeta,
        };
        Ok((grads, Flow { dx, g }))
    }
}

/// One block as the node ran it: its main pairs in order and its projection shortcut.
pub(super) struct BlockTape {
    main: Vec<Unit>,
    shortcut: Option<Unit>,
}

impl BlockTape {
    /// The block `b` on `x` (op layout, detached); returns it and its output.
    pub(super) fn forward(x: &Tensor, nhwc: bool, b: &ResidualBlock) -> Result<(Self, Tensor)> {
        let (last, rest) = b.split_last()?;
        let mut main = Vec::with_capacity(b.main.len());
        let mut h = x.clone();
        for pair in rest {
            let (unit, y) = Unit::forward(&h, pair, nhwc, b, NormTail::Relu)?;
            main.push(unit);
            h = y;
        }
        let shortcut = match &b.shortcut {
            Some(pair) => Some(Unit::forward(x, pair, nhwc, b, NormTail::None)?),
            None => None,
        };
        let residual = shortcut.as_ref().map_or(x, |(_, y)| y);
        let (unit, y) = Unit::forward(&h, last, nhwc, b, NormTail::AddRelu(residual))?;
        main.push(unit);
        let tape = Self {
            main,
            shortcut: shortcut.map(|(unit, _)| unit),
        };
        Ok((tape, y))
    }

    /// The block's input (op layout): the previous block's output.
    pub(super) fn input(&self) -> &Tensor {
        &self.main[0].input
    }

    /// The gradient at the block's input (when `need_dx`) and its pairs' gradients (main pairs
    /// in order, then the shortcut's), from its output `y` and output gradient `dy`.
    pub(super) fn backward(
        &self,
        y: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Vec<UnitGrads>)> {
        let mut grads: Vec<UnitGrads> = Vec::with_capacity(self.main.len() + 1);
        let mut d = dy.clone();
        let mut residual_grad = None;
        for (i, unit) in self.main.iter().enumerate().rev() {
            // A pair's output is the next pair's input; the last one's is the block's.
            let out = match self.main.get(i + 1) {
                Some(next) => &next.input,
                None => y,
            };
            let (g, flow) = unit.backward(out, &d, i > 0 || need_dx)?;
            if residual_grad.is_none() {
                residual_grad = Some(flow.g);
            }
            if let Some(dx) = flow.dx {
                d = dx;
            }
            grads.push(g);
        }
        grads.reverse();
        let Some(residual_grad) = residual_grad else {
            candle_core::bail!("residual_block: the block has no conv-BatchNorm pair")
        };
        let shortcut_dx = match &self.shortcut {
            Some(unit) => {
                // The shortcut's BatchNorm has no ReLU, so its backward does not read its output
                // (the first argument).
                let (g, flow) = unit.backward(&residual_grad, &residual_grad, need_dx)?;
                grads.push(g);
                flow.dx
            }
            None => Some(residual_grad),
        };
        let dx = match (need_dx, shortcut_dx) {
            (true, Some(s)) => Some((&d + s)?),
            _ => None,
        };
        Ok((dx, grads))
    }
}
