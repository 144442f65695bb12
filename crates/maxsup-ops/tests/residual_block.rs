//! The ResNet block, and a chain of blocks, as one graph node (CUDA's train-mode path, run here
//! on the CPU) against the composed ops: outputs, running statistics and every gradient equal
//! bit for bit, NCHW and channels-last, BasicBlock and Bottleneck, with and without a
//! projection shortcut. (The composed ops are held to PyTorch and to finite differences in
//! their own tests.)

mod common;
use candle_core::{DType, Device, Result, Tensor, Var};
use common::*;
use maxsup_ops::{
    channels_last_view, nhwc_view, residual_block, residual_block_composed, residual_block_nhwc,
    residual_blocks, residual_blocks_graph, residual_blocks_nhwc_graph, to_channels_last,
    BlockConv, BlockNorm, ResidualBlock,
};

/// (input channels, planes, stride, bottleneck): the shortcut projects when the stride or the
/// channel count changes, as torchvision's.
const CASES: [(usize, usize, usize, bool); 4] = [
    (8, 8, 1, false),
    (8, 16, 2, false),
    (16, 4, 1, true),
    (8, 4, 2, true),
];

struct Block {
    /// Per pair: conv weight, BatchNorm weight, BatchNorm bias.
    params: Vec<[Var; 3]>,
    strides: Vec<(usize, usize)>,
    bottleneck_out: usize,
    has_shortcut: bool,
}

impl Block {
    fn new(
        (cin, planes, stride, bottleneck): (usize, usize, usize, bool),
        seed: u64,
    ) -> Result<Self> {
        // (in, out, kernel, stride) of the main convs, then the shortcut's.
        let mut convs: Vec<(usize, usize, usize, usize)> = match bottleneck {
            true => vec![
                (cin, planes, 1, 1),
                (planes, planes, 3, stride),
                (planes, 4 * planes, 1, 1),
            ],
            false => vec![(cin, planes, 3, stride), (planes, planes, 3, 1)],
        };
        let out = convs.last().map(|c| c.1).unwrap_or(0);
        let has_shortcut = stride != 1 || cin != out;
        if has_shortcut {
            convs.push((cin, out, 1, stride));
        }
        let mut params = vec![];
        let mut strides = vec![];
        for (i, &(ci, co, k, s)) in convs.iter().enumerate() {
            let seed = seed + 10 * i as u64;
            let w = rand_var(&[co, ci, k, k], seed)?;
            w.set(&(w.as_tensor() * (1.0 / ((ci * k * k) as f64).sqrt()))?)?;
            let gamma = rand_var(&[co], seed + 1)?;
            gamma.set(&(gamma.as_tensor() * 0.5)?.affine(1.0, 1.0)?)?;
            let beta = rand_var(&[co], seed + 2)?;
            params.push([w, gamma, beta]);
            strides.push((s, k / 2));
        }
        Ok(Self {
            params,
            strides,
            bottleneck_out: out,
            has_shortcut,
        })
    }

    /// The block with fresh running statistics (mean 0, variance 1).
    fn weights(&self) -> Result<ResidualBlock> {
        let mut pairs = vec![];
        for ([w, gamma, beta], &(stride, padding)) in self.params.iter().zip(&self.strides) {
            let c = gamma.elem_count();
            pairs.push((
                BlockConv {
                    weight: w.as_tensor().clone(),
                    stride,
                    padding,
                    blur: None,
                },
                BlockNorm {
                    weight: gamma.as_tensor().clone(),
                    bias: beta.as_tensor().clone(),
                    running_mean: Var::zeros(c, DType::F32, &Device::Cpu)?,
                    running_var: Var::ones(c, DType::F32, &Device::Cpu)?,
                },
            ));
        }
        let shortcut = match self.has_shortcut {
            true => pairs.pop(),
            false => None,
        };
        Ok(ResidualBlock {
            main: pairs,
            shortcut,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    fn vars(&self) -> Vec<&Var> {
        self.params.iter().flatten().collect()
    }
}

fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

fn running(b: &ResidualBlock) -> Result<Vec<Vec<u32>>> {
    b.main
        .iter()
        .chain(b.shortcut.iter())
        .flat_map(|(_, n)| [n.running_mean.as_tensor(), n.running_var.as_tensor()])
        .map(bits)
        .collect()
}

/// How the block's input is held: NCHW, the channels-last `[N, C, H, W]` view, or the
/// `[N, H, W, C]` op layout (`residual_block_nhwc`), whose result is compared through its
/// channels-last view.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Nchw,
    ChannelsLast,
    NhwcOpLayout,
}

#[test]
fn graph_node_equals_the_composed_ops_bit_for_bit() -> Result<()> {
    for (case, &spec) in CASES.iter().enumerate() {
        for format in [Format::Nchw, Format::ChannelsLast, Format::NhwcOpLayout] {
            let channels_last = format != Format::Nchw;
            let seed = 100 * case as u64;
            let block = Block::new(spec, seed)?;
            let x = rand_var(&[3, spec.0, 8, 8], seed + 99)?;
            let input = || match channels_last {
                true => to_channels_last(x.as_tensor()),
                false => Ok(x.as_tensor().clone()),
            };
            let (graph_w, composed_w) = (block.weights()?, block.weights()?);
            let graph = || match format {
                Format::NhwcOpLayout => channels_last_view(&residual_blocks_nhwc_graph(
                    &nhwc_view(&input()?)?,
                    std::slice::from_ref(&graph_w),
                )?),
                _ => residual_blocks_graph(&input()?, std::slice::from_ref(&graph_w)),
            };
            let composed = || residual_block_composed(&input()?, &composed_w, true);
            let mut vars = vec![&x];
            vars.extend(block.vars());
            let (yg, gg) = output_and_grads(&vars, &graph, seed + 7)?;
            let (yc, gc) = output_and_grads(&vars, &composed, seed + 7)?;
            let what = format!("case {case} {spec:?}, {format:?}");
            assert_eq!(
                yg.dims(),
                &[3, block.bottleneck_out, 8 / spec.2, 8 / spec.2],
                "{what}: output shape"
            );
            assert_eq!(
                maxsup_ops::is_channels_last(&yg),
                channels_last,
                "{what}: the output keeps the input's memory format"
            );
            assert!(bits(&yg)? == bits(&yc)?, "{what}: outputs differ");
            assert!(
                running(&graph_w)? == running(&composed_w)?,
                "{what}: running statistics differ"
            );
            for (i, (g, c)) in gg.iter().zip(&gc).enumerate() {
                assert!(bits(g)? == bits(c)?, "{what}: gradient {i} differs");
                let total = c.abs()?.sum_all()?.to_scalar::<f32>()?;
                assert!(total > 0.0, "{what}: gradient {i} is zero");
            }
        }
    }
    Ok(())
}

/// Blocks that chain: a projecting BasicBlock (8 -> 16, stride 2), an identity BasicBlock and
/// an identity Bottleneck (16 -> 4 -> 16).
const CHAIN: [(usize, usize, usize, bool); 3] =
    [(8, 16, 2, false), (16, 16, 1, false), (16, 4, 1, true)];

fn chain(seed: u64) -> Result<Vec<Block>> {
    CHAIN
        .iter()
        .enumerate()
        .map(|(i, &spec)| Block::new(spec, seed + 1000 * i as u64))
        .collect()
}

fn chain_weights(blocks: &[Block]) -> Result<Vec<ResidualBlock>> {
    blocks.iter().map(|b| b.weights()).collect()
}

#[test]
fn a_chain_of_blocks_as_one_node_equals_the_composed_ops_bit_for_bit() -> Result<()> {
    for format in [Format::Nchw, Format::ChannelsLast, Format::NhwcOpLayout] {
        let channels_last = format != Format::Nchw;
        let blocks = chain(500)?;
        let x = rand_var(&[2, 8, 8, 8], 77)?;
        let input = || match channels_last {
            true => to_channels_last(x.as_tensor()),
            false => Ok(x.as_tensor().clone()),
        };
        let (graph_w, composed_w) = (chain_weights(&blocks)?, chain_weights(&blocks)?);
        let graph = || match format {
            Format::NhwcOpLayout => channels_last_view(&residual_blocks_nhwc_graph(
                &nhwc_view(&input()?)?,
                &graph_w,
            )?),
            _ => residual_blocks_graph(&input()?, &graph_w),
        };
        let composed = || {
            let mut y = input()?;
            for b in &composed_w {
                y = residual_block_composed(&y, b, true)?;
            }
            Ok(y)
        };
        let mut vars = vec![&x];
        vars.extend(blocks.iter().flat_map(|b| b.vars()));
        let (yg, gg) = output_and_grads(&vars, &graph, 8)?;
        let (yc, gc) = output_and_grads(&vars, &composed, 8)?;
        let what = format!("chain, {format:?}");
        assert_eq!(yg.dims(), &[2, 16, 4, 4], "{what}: output shape");
        assert_eq!(
            maxsup_ops::is_channels_last(&yg),
            channels_last,
            "{what}: format"
        );
        assert!(bits(&yg)? == bits(&yc)?, "{what}: outputs differ");
        for (i, (g, c)) in graph_w.iter().zip(&composed_w).enumerate() {
            assert!(
                running(g)? == running(c)?,
                "{what}: block {i}'s running statistics differ"
            );
        }
        assert_eq!(
            gg.len(),
            1 + 3 * (3 + 2 + 3),
            "{what}: x and every pair's three parameters"
        );
        for (i, (g, c)) in gg.iter().zip(&gc).enumerate() {
            assert!(bits(g)? == bits(c)?, "{what}: gradient {i} differs");
            let total = c.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(total > 0.0, "{what}: gradient {i} is zero");
        }
    }
    Ok(())
}

#[test]
fn a_chain_needs_a_block_and_off_cuda_runs_the_composed_ops() -> Result<()> {
    let x = rand_tensor(&[2, 8, 8, 8], 3)?;
    let e = residual_blocks_graph(&x, &[]).unwrap_err().to_string();
    assert!(e.contains("at least one block"), "{e}");
    assert!(
        bits(&residual_blocks(&x, &[], true)?)? == bits(&x)?,
        "no block: the input"
    );
    let blocks = chain(9)?;
    for train in [true, false] {
        let (a, b) = (chain_weights(&blocks)?, chain_weights(&blocks)?);
        let y = residual_blocks(&x, &a, train)?;
        let mut z = x.clone();
        for block in &b {
            z = residual_block_composed(&z, block, train)?;
        }
        assert!(bits(&y)? == bits(&z)?, "train {train}");
    }
    Ok(())
}

#[test]
fn untracked_input_gets_no_gradient_and_the_weights_still_do() -> Result<()> {
    let block = Block::new(CASES[2], 3)?;
    let x = rand_tensor(&[2, CASES[2].0, 6, 6], 4)?;
    let w = block.weights()?;
    let y = residual_blocks_graph(&x, std::slice::from_ref(&w))?;
    let grads = (y * rand_tensor(&[2, 16, 6, 6], 5)?)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&x).is_none());
    for v in block.vars() {
        assert!(
            grads.get(v.as_tensor()).is_some(),
            "a parameter lost its gradient"
        );
    }
    // The same through a chain: the first block's input gradient is not computed.
    let blocks = chain(21)?;
    let x = rand_tensor(&[2, 8, 8, 8], 22)?;
    let y = residual_blocks_graph(&x, &chain_weights(&blocks)?)?;
    let grads = (y * rand_tensor(&[2, 16, 4, 4], 23)?)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&x).is_none());
    for v in blocks.iter().flat_map(|b| b.vars()) {
        assert!(
            grads.get(v.as_tensor()).is_some(),
            "a chained block's parameter lost its gradient"
        );
    }
    Ok(())
}

#[test]
fn off_cuda_and_in_eval_the_block_runs_the_composed_ops() -> Result<()> {
    let block = Block::new(CASES[1], 11)?;
    let x = rand_tensor(&[2, 8, 8, 8], 12)?;
    for train in [true, false] {
        let (a, b) = (block.weights()?, block.weights()?);
        let y = residual_block(&x, &a, train)?;
        let z = residual_block_composed(&x, &b, train)?;
        assert!(bits(&y)? == bits(&z)?, "train {train}");
        // The op-layout entry: the same floats, handed back as [N, H, W, C].
        let c = block.weights()?;
        let xl = to_channels_last(&x)?;
        let y = residual_block_nhwc(&nhwc_view(&xl)?, &c, train)?;
        assert_eq!(y.dims(), &[2, 4, 4, 16], "train {train}: op-layout shape");
        assert!(y.is_contiguous());
        assert!(
            bits(&y.permute((0, 3, 1, 2))?)? == bits(&z)?,
            "train {train}: op layout"
        );
    }
    Ok(())
}

#[test]
fn op_layout_views_reject_tensors_in_another_format() -> Result<()> {
    let x = rand_tensor(&[2, 3, 4, 5], 1)?;
    let e = nhwc_view(&x).unwrap_err().to_string();
    assert!(e.contains("not channels-last"), "{e}");
    let v = nhwc_view(&to_channels_last(&x)?)?;
    assert_eq!(v.dims(), &[2, 4, 5, 3]);
    assert!(v.is_contiguous());
    let back = channels_last_view(&v)?;
    assert!(maxsup_ops::is_channels_last(&back));
    assert!(bits(&back)? == bits(&x)?);
    let e = channels_last_view(&back).unwrap_err().to_string();
    assert!(e.contains("contiguous 4-D"), "{e}");
    let block = Block::new(CASES[0], 2)?.weights()?;
    let e = residual_block_nhwc(&back, &block, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("residual_block_nhwc"), "{e}");
    Ok(())
}
