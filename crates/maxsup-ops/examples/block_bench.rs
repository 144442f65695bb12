//! A ResNet block's train step (forward and backward of `sum(y * r)`) as one graph node
//! (`residual_blocks_graph`, CUDA's path) against the composed ops (`residual_block_composed`,
//! the CPU's path), on this machine's CPU: what the per-edge zero-fill and add of candle's
//! backward costs at ResNet-50 shapes. Alternating rounds; prints each median and the ratio.
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
            step(true)?;
            step(false)?;
            let (mut g, mut c) = (vec![], vec![]);
            for _ in 0..rounds {
                g.push(step(true)?);
                c.push(step(false)?);
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            let (g, c) = (median(&mut g), median(&mut c));
            println!(
                "{name} b{n} {side}px channels-last={channels_last}: graph {:.2} ms, composed {:.2} ms, graph/composed {:.3}",
                g * 1e3,
                c * 1e3,
                g / c
            );
        }
    }
    Ok(())
}
