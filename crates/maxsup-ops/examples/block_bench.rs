//! A ResNet block's train step (forward and backward of `sum(y * r)`) as one graph node
//! (`residual_blocks_graph`, CUDA's path) against the composed ops (`residual_block_composed`,
//! the CPU's path), on this machine's CPU: what the per-edge zero-fill and add of candle's
//! backward costs at ResNet-50 shapes; then three identity blocks as one chain node
//! (`residual_blocks_graph`, ResNet's train-mode path on CUDA) against three one-block nodes: what
//! a block boundary's zero-fill, add and output copy cost. Alternating rounds; prints each
//! median and the ratio.
//! Run: `cargo run --release -p maxsup-ops --example block_bench [-- ROUNDS]`

use candle_core::{DType, Device, Result, Tensor, Var};
use maxsup_ops::{
    residual_block_composed, residual_blocks_graph, to_channels_last, BlockConv, BlockNorm,
    ResidualBlock,
};
use std::time::Instant;

/// (name, batch, input channels, planes, stride, side).
const CASES: [(&str, usize, usize, usize, usize, usize); 3] = [
    ("layer1 identity 256-64-256", 16, 256, 64, 1, 32),
    ("layer2 first 256-128-512 s2", 16, 256, 128, 2, 32),
    ("layer3 identity 1024-256-1024", 16, 1024, 256, 1, 8),
];

fn var(shape: &[usize], scale: f64) -> Result<Var> {
    Var::from_tensor(&(Tensor::randn(0f32, 1.0, shape, &Device::Cpu)? * scale)?)
}

fn pair(cin: usize, cout: usize, k: usize, stride: usize) -> Result<(BlockConv, BlockNorm)> {
    let w = var(&[cout, cin, k, k], 1.0 / ((cin * k * k) as f64).sqrt())?;
    Ok((
        BlockConv {
            weight: w.as_tensor().clone(),
            stride,
            padding: k / 2,
            blur: None,
        },
        BlockNorm {
            weight: var(&[cout], 1.0)?.as_tensor().affine(0.1, 1.0)?,
            bias: var(&[cout], 0.1)?.as_tensor().clone(),
            running_mean: Var::zeros(cout, DType::F32, &Device::Cpu)?,
            running_var: Var::ones(cout, DType::F32, &Device::Cpu)?,
        },
    ))
}

/// The median of `rounds` alternating timings of `a` and `b` (after one warm-up each).
fn medians(
    rounds: usize,
    a: impl Fn() -> Result<f64>,
    b: impl Fn() -> Result<f64>,
) -> Result<(f64, f64)> {
    a()?;
    b()?;
    let (mut ta, mut tb) = (vec![], vec![]);
    for _ in 0..rounds {
        ta.push(a()?);
        tb.push(b()?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    Ok((median(&mut ta), median(&mut tb)))
}

/// Three identity Bottlenecks 256-64-256 (ResNet-50's layer1 after its first block) at batch
/// 16, 32 px, channels-last: one chain node against one node per block.
fn chain_case(rounds: usize) -> Result<()> {
    let (n, side) = (16, 32);
    let blocks = (0..3)
        .map(|_| {
            Ok(ResidualBlock {
                main: vec![
                    pair(256, 64, 1, 1)?,
                    pair(64, 64, 3, 1)?,
                    pair(64, 256, 1, 1)?,
                ],
                shortcut: None,
                momentum: 0.1,
                eps: 1e-5,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let x = var(&[n, 256, side, side], 1.0)?;
    let r = Tensor::randn(0f32, 1.0, (n, 256, side, side), &Device::Cpu)?;
    let step = |chain: bool| -> Result<f64> {
        let t = Instant::now();
        let input = to_channels_last(x.as_tensor())?;
        let y = match chain {
            true => residual_blocks_graph(&input, &blocks)?,
            false => {
                let mut y = input;
                for b in &blocks {
                    y = residual_blocks_graph(&y, std::slice::from_ref(b))?;
                }
                y
            }
        };
        let grads = (y * &r)?.sum_all()?.backward()?;
        drop(grads);
        Ok(t.elapsed().as_secs_f64())
    };
    let (chain, nodes) = medians(rounds, || step(true), || step(false))?;
    println!(
        "3 x layer1 identity 256-64-256 b{n} {side}px channels-last: one chain node {:.2} ms, a node per block {:.2} ms, chain/nodes {:.3}",
        chain * 1e3,
        nodes * 1e3,
        chain / nodes
    );
    Ok(())
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    for channels_last in [false, true] {
        for (name, n, cin, planes, stride, side) in CASES {
            let out = 4 * planes;
            let block = ResidualBlock {
                main: vec![
                    pair(cin, planes, 1, 1)?,
                    pair(planes, planes, 3, stride)?,
                    pair(planes, out, 1, 1)?,
                ],
                shortcut: match stride != 1 || cin != out {
                    true => Some(pair(cin, out, 1, stride)?),
                    false => None,
                },
                momentum: 0.1,
                eps: 1e-5,
            };
            let x = var(&[n, cin, side, side], 1.0)?;
            let r = Tensor::randn(
                0f32,
                1.0,
                (n, out, side / stride, side / stride),
                &Device::Cpu,
            )?;
            let step = |graph: bool| -> Result<f64> {
                let t = Instant::now();
                let input = match channels_last {
                    true => to_channels_last(x.as_tensor())?,
                    false => x.as_tensor().clone(),
                };
                let y = match graph {
                    true => residual_blocks_graph(&input, std::slice::from_ref(&block))?,
                    false => residual_block_composed(&input, &block, true)?,
                };
                let grads = (y * &r)?.sum_all()?.backward()?;
                drop(grads);
                Ok(t.elapsed().as_secs_f64())
            };
            let (g, c) = medians(rounds, || step(true), || step(false))?;
            println!(
                "{name} b{n} {side}px channels-last={channels_last}: graph {:.2} ms, composed {:.2} ms, graph/composed {:.3}",
                g * 1e3,
                c * 1e3,
                g / c
            );
        }
    }
    chain_case(rounds)
}
