//! A DeiT sub-block's train step (forward and backward of `sum(y * r)`) three ways, on this
//! machine's CPU: the graph node (`residual_*_graph`, CUDA's path, with its fused bias passes),
//! the composed ops (`residual_*_composed`) and the fused CPU kernel (`residual_*`, the CPU's
//! path). DeiT-S shapes (C 384, 6 heads, 197 tokens), stochastic depth on. Alternating rounds;
//! prints each median and the ratios to the composed ops.
//! Run: `cargo run --release -p maxsup-ops --example branch_bench [-- ROUNDS [BATCH]]`

use candle_core::{Device, Result, Tensor, Var};
use maxsup_ops::{
    residual_attention, residual_attention_composed, residual_attention_graph, residual_mlp,
    residual_mlp_composed, residual_mlp_graph, BranchWeights,
};
use std::time::Instant;

const DIM: usize = 384;
const HEADS: usize = 6;
const TOKENS: usize = 197;

fn var(shape: &[usize], scale: f64, shift: f64) -> Result<Var> {
    Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?.affine(scale, shift)?)
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Graph,
    Composed,
    Fused,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let rounds = args.next().flatten().unwrap_or(7);
    let batch = args.next().flatten().unwrap_or(8);
    for attention in [false, true] {
        let (hidden, width) = match attention {
            true => (3 * DIM, DIM),
            false => (4 * DIM, 4 * DIM),
        };
        let p = [
            var(&[DIM], 0.1, 1.0)?,
            var(&[DIM], 0.1, 0.0)?,
            var(&[hidden, DIM], 1.0 / (DIM as f64).sqrt(), 0.0)?,
            var(&[hidden], 0.02, 0.0)?,
            var(&[DIM, width], 1.0 / (width as f64).sqrt(), 0.0)?,
            var(&[DIM], 0.02, 0.0)?,
        ];
        let w = BranchWeights {
            norm_weight: p[0].as_tensor(),
            norm_bias: p[1].as_tensor(),
            norm_eps: 1e-6,
            in_weight: p[2].as_tensor(),
            in_bias: p[3].as_tensor(),
            out_weight: p[4].as_tensor(),
            out_bias: p[5].as_tensor(),
        };
        let x = var(&[batch, TOKENS, DIM], 1.0, 0.0)?;
        let r = Tensor::randn(0f32, 1.0, (batch, TOKENS, DIM), &Device::Cpu)?;
        // Stochastic depth at rate 0.1: one image in ten dropped, the rest scaled by 1/0.9.
        let s: Vec<f32> = (0..batch)
            .map(|i| if i % 10 == 9 { 0.0 } else { 1.0 / 0.9 })
            .collect();
        let scale = Tensor::from_vec(s, batch, &Device::Cpu)?;
        let step = |path: Path| -> Result<f64> {
            let t = Instant::now();
            let (x, s) = (x.as_tensor(), Some(&scale));
            let y = match (attention, path) {
                (true, Path::Graph) => residual_attention_graph(x, &w, HEADS, s)?,
                (true, Path::Composed) => residual_attention_composed(x, &w, HEADS, s)?,
                (true, Path::Fused) => residual_attention(x, &w, HEADS, s)?,
                (false, Path::Graph) => residual_mlp_graph(x, &w, s)?,
                (false, Path::Composed) => residual_mlp_composed(x, &w, s)?,
                (false, Path::Fused) => residual_mlp(x, &w, s)?,
            };
            let grads = (y * &r)?.sum_all()?.backward()?;
            drop(grads);
            Ok(t.elapsed().as_secs_f64())
        };
        let paths = [Path::Graph, Path::Composed, Path::Fused];
        for &path in &paths {
            step(path)?;
        }
        let mut times = [vec![], vec![], vec![]];
        for _ in 0..rounds {
            for (i, &path) in paths.iter().enumerate() {
                times[i].push(step(path)?);
            }
        }
        let [g, c, f] = times.map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        });
        println!(
            "{} b{batch}: graph {:.1} ms, composed {:.1} ms, fused CPU op {:.1} ms; graph/composed {:.3}, fused/composed {:.3}",
            if attention { "attention" } else { "mlp" },
            g * 1e3,
            c * 1e3,
            f * 1e3,
            g / c,
            f / c
        );
    }
    Ok(())
}
