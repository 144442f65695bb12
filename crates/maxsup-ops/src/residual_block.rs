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
//! [`residual_block`] takes the node in train mode on CUDA; elsewhere (the CPU, whose fused
//! kernels make the edges cheap relative to the convolutions, and evaluation) it runs the
//! composed ops.

use crate::batch_norm::{NormInGraph, NormTail};
use crate::conv::ConvInGraph;
use crate::dispatch::fused;
use crate::graph_node::PrecomputedOutput;
use crate::layout;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};

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
    if train && x.device().is_cuda() && graph_applies(x, block) {
        return graph(x, block);
    }
    residual_block_composed(x, block, train)
}

/// The block on `x` in the channels-last op layout: `x` is `[N, H, W, C]` contiguous (see
/// [`crate::nhwc_view`]), and so is the result. The same block as [`residual_block`] on the
/// channels-last `[N, C, H, W]` view; what it saves is the two permutation nodes at each end,
/// so a chain of blocks passes activations with no permutation between them (on CUDA, in train
/// mode, two transposing passes over an activation gradient per block boundary less).
pub fn residual_block_nhwc(x: &Tensor, block: &ResidualBlock, train: bool) -> Result<Tensor> {
    check_op_layout(x)?;
    if train && x.device().is_cuda() && graph_applies(x, block) {
        return graph_in_op_layout(x, true, block);
    }
    let y = residual_block_composed(&layout::from_nhwc(x)?, block, train)?;
    layout::nhwc(&y)?.contiguous()
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

/// [`residual_block`] in train mode through the graph node whatever the device (doc-hidden: the
/// CPU tests run it against [`residual_block_composed`]).
#[doc(hidden)]
pub fn residual_block_graph(x: &Tensor, block: &ResidualBlock) -> Result<Tensor> {
    check_graph_applies(x, block)?;
    graph(x, block)
}

fn check_graph_applies(x: &Tensor, block: &ResidualBlock) -> Result<()> {
    if !graph_applies(x, block) {
        candle_core::bail!(
            "residual_block graph node: needs the fused kernels' dtypes and devices (and, on the \
             CPU, no BlurPool: its grouped conv has no CPU kernel)"
        );
    }
    Ok(())
}

/// [`residual_block_nhwc`] in train mode through the graph node whatever the device
/// (doc-hidden, for the CPU tests).
#[doc(hidden)]
pub fn residual_block_nhwc_graph(x: &Tensor, block: &ResidualBlock) -> Result<Tensor> {
    check_op_layout(x)?;
    check_graph_applies(x, block)?;
    graph_in_op_layout(x, true, block)
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

/// A pair's gradients: its input's (when asked), its conv weight's (`[O, C, K, K]`), its
/// BatchNorm weight's and bias's, and the gradient reaching the normalisation (the residual's
/// under an add-ReLU tail).
struct UnitGrads {
    dx: Option<Tensor>,
    dweight: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
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
    fn backward(&self, y: &Tensor, dy: &Tensor, need_dx: bool) -> Result<UnitGrads> {
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
        Ok(UnitGrads {
            dx,
            dweight: self.conv.weight_grad_oihw(&dw)?,
            dgamma,
            dbeta,
            g,
        })
    }
}

/// The block as one node on the `[N, C, H, W]` tensor `x` (NCHW or channels-last).
fn graph(x: &Tensor, b: &ResidualBlock) -> Result<Tensor> {
    let nhwc = layout::is_channels_last(x);
    let x_op = match nhwc {
        true => layout::nhwc(x)?,
        false => x.contiguous()?,
    };
    let y = graph_in_op_layout(&x_op, nhwc, b)?;
    match nhwc {
        true => layout::from_nhwc(&y),
        false => Ok(y),
    }
}

/// The block as one node (see the module doc) on `x_op`, contiguous in the ops' layout
/// (`[N, H, W, C]` when `nhwc`), returning its output in the same layout; shapes are checked
/// by the kernels it runs.
fn graph_in_op_layout(x_op: &Tensor, nhwc: bool, b: &ResidualBlock) -> Result<Tensor> {
    let xd = x_op.detach();
    let (last, rest) = b.split_last()?;
    let mut main = Vec::with_capacity(b.main.len());
    let mut h = xd.clone();
    for pair in rest {
        let (unit, y) = Unit::forward(&h, pair, nhwc, b, NormTail::Relu)?;
        main.push(unit);
        h = y;
    }
    let shortcut = match &b.shortcut {
        Some(pair) => Some(Unit::forward(&xd, pair, nhwc, b, NormTail::None)?),
        None => None,
    };
    let residual = shortcut.as_ref().map_or(&xd, |(_, y)| y);
    let (unit, y) = Unit::forward(&h, last, nhwc, b, NormTail::AddRelu(residual))?;
    main.push(unit);
    let params: Vec<&Tensor> = b
        .pairs()
        .flat_map(|(c, n)| [&c.weight, &n.weight, &n.bias])
        .collect();
    if !x_op.track_op() && !params.iter().any(|t| t.track_op()) {
        // Nothing to differentiate: no node, no copy of the output.
        return Ok(y);
    }
    let flat = |ts: Vec<&Tensor>| -> Result<Tensor> {
        let flat: Vec<Tensor> = ts.iter().map(|t| t.flatten_all()).collect::<Result<_>>()?;
        Tensor::cat(&flat, 0)
    };
    let norms = flat(b.pairs().flat_map(|(_, n)| [&n.weight, &n.bias]).collect())?;
    let convs = flat(b.pairs().map(|(c, _)| &c.weight).collect())?;
    let op = BlockGraphOp {
        output: PrecomputedOutput::new("residual block", y),
        main,
        shortcut: shortcut.map(|(unit, _)| unit),
        need_dx: x_op.track_op(),
    };
    x_op.apply_op3(&norms, &convs, op)
}

/// Operands `(x in the op layout, [gamma | beta per pair] (f32), [conv weights] (the
/// activations' dtype))`, the pairs in `main` then `shortcut` order.
struct BlockGraphOp {
    output: PrecomputedOutput,
    main: Vec<Unit>,
    shortcut: Option<Unit>,
    need_dx: bool,
}

impl CustomOp3 for BlockGraphOp {
    fn name(&self) -> &'static str {
        "maxsup-residual-block-graph"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.output.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.output.cuda()
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _norms: &Tensor,
        _convs: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let mut grads: Vec<UnitGrads> = Vec::with_capacity(self.main.len() + 1);
        let mut d = dy;
        let mut residual_grad = None;
        for (i, unit) in self.main.iter().enumerate().rev() {
            // A pair's output is the next pair's input; the last one's is the node's.
            let out = match self.main.get(i + 1) {
                Some(next) => &next.input,
                None => y,
            };
            let g = unit.backward(out, &d, i > 0 || self.need_dx)?;
            if residual_grad.is_none() {
                residual_grad = Some(g.g.clone());
            }
            if let Some(dx) = &g.dx {
                d = dx.clone();
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
                let g = unit.backward(&residual_grad, &residual_grad, self.need_dx)?;
                let dx = g.dx.clone();
                grads.push(g);
                dx
            }
            None => Some(residual_grad),
        };
        let dx = match (self.need_dx, shortcut_dx) {
            (true, Some(s)) => Some((&d + s)?),
            _ => None,
        };
        let norms: Vec<Tensor> = grads
            .iter()
            .flat_map(|g| [g.dgamma.flatten_all(), g.dbeta.flatten_all()])
            .collect::<Result<_>>()?;
        let convs: Vec<Tensor> = grads
            .iter()
            .map(|g| g.dweight.flatten_all())
            .collect::<Result<_>>()?;
        Ok((
            dx,
            Some(Tensor::cat(&norms, 0)?),
            Some(Tensor::cat(&convs, 0)?),
        ))
    }
}
