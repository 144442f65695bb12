//! The fused transformer sub-blocks (MLP and attention, each with LayerNorm, stochastic-depth
//! scale and residual join) against their compositions from the separate ops, in the output and
//! in the gradients of the input and all six parameters, and by finite differences.

mod common;
use candle_core::{Device, Result, Tensor, Var};
use common::*;
use maxsup_ops::{
    residual_attention, residual_attention_composed, residual_attention_graph, residual_mlp,
    residual_mlp_composed, residual_mlp_graph, BranchWeights,
};

struct Params {
    vars: Vec<Var>,
}

impl Params {
    /// LayerNorm weight/bias, `in` weight/bias (`[h, d]`), `out` weight/bias (`[d, w]`).
    fn new(d: usize, h: usize, w: usize, seed: u64) -> Result<Self> {
        let shapes: [&[usize]; 6] = [&[d], &[d], &[h, d], &[h], &[d, w], &[d]];
        let vars = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| rand_var(s, seed + i as u64))
            .collect::<Result<Vec<_>>>()?;
        // A LayerNorm weight around 1, as trained ones are.
        vars[0].set(&(vars[0].as_tensor() * 0.5)?.affine(1.0, 1.0)?)?;
        Ok(Self { vars })
    }

    fn weights(&self) -> BranchWeights<'_> {
        let v = |i: usize| self.vars[i].as_tensor();
        BranchWeights {
            norm_weight: v(0),
            norm_bias: v(1),
            norm_eps: 1e-6,
            in_weight: v(2),
            in_bias: v(3),
            out_weight: v(4),
            out_bias: v(5),
        }
    }
}

/// Fused against composed for (batch, tokens, width, hidden, scaled) cases; `heads` selects
/// attention (hidden 3 x width) instead of the MLP.
fn check_against_composed(heads: Option<usize>, graph: bool) -> Result<()> {
    for (case, &(b, t, d, h, scaled)) in [
        (2usize, 5usize, 12usize, 48usize, false),
        (3, 4, 12, 36, true),
        (1, 1, 6, 18, true),
    ]
    .iter()
    .enumerate()
    {
        let (h, w) = if heads.is_some() { (3 * d, d) } else { (h, h) };
        let seed = 100 * case as u64 + heads.unwrap_or(0) as u64;
        let x = rand_var(&[b, t, d], seed)?;
        let p = Params::new(d, h, w, seed + 10)?;
        // One sample kept and scaled, one dropped (0), one doubled.
        let scale = scaled
            .then(|| {
                let s: Vec<f32> = (0..b).map(|i| [1.25, 0.0, 2.0][i % 3]).collect();
                Tensor::from_vec(s, b, &Device::Cpu)
            })
            .transpose()?;
        let mut vars = vec![&x];
        vars.extend(p.vars.iter());
        let fast = || match heads {
            Some(k) if graph => {
                residual_attention_graph(x.as_tensor(), &p.weights(), k, scale.as_ref())
            }
            Some(k) => residual_attention(x.as_tensor(), &p.weights(), k, scale.as_ref()),
            None if graph => residual_mlp_graph(x.as_tensor(), &p.weights(), scale.as_ref()),
            None => residual_mlp(x.as_tensor(), &p.weights(), scale.as_ref()),
        };
        let slow = || match heads {
            Some(k) => residual_attention_composed(x.as_tensor(), &p.weights(), k, scale.as_ref()),
            None => residual_mlp_composed(x.as_tensor(), &p.weights(), scale.as_ref()),
        };
        let (yf, gf) = output_and_grads(&vars, &fast, seed + 1)?;
        let (ys, gs) = output_and_grads(&vars, &slow, seed + 1)?;
        let what = format!("{heads:?} heads, graph node {graph}, case {case}");
        assert_close(&yf, &ys, 1e-5, &format!("{what}: output"))?;
        let names = [
            "x",
            "norm.weight",
            "norm.bias",
            "in.weight",
            "in.bias",
            "out.weight",
            "out.bias",
        ];
        for ((name, f), s) in names.iter().zip(&gf).zip(&gs) {
            assert_close(f, s, 1e-4, &format!("{what}: grad {name}"))?;
            // Not vacuous: every gradient has non-zero entries.
            let total = s.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(total > 0.0, "{what}: {name} grad is 0");
        }
        if case == 1 {
            check_finite_diff(&x, &gf[0], &fast, seed + 1, 2e-2)?;
            check_finite_diff(&p.vars[2], &gf[3], &fast, seed + 1, 2e-2)?;
            check_finite_diff(&p.vars[0], &gf[1], &fast, seed + 1, 2e-2)?;
        }
    }
    Ok(())
}

#[test]
fn fused_mlp_matches_composed_in_values_and_every_gradient() -> Result<()> {
    check_against_composed(None, false)
}

/// The one-node path CUDA takes (the separate ops forward, hand-written backward).
#[test]
fn graph_node_mlp_matches_composed_in_values_and_every_gradient() -> Result<()> {
    check_against_composed(None, true)
}

#[test]
fn fused_attention_matches_composed_in_values_and_every_gradient() -> Result<()> {
    check_against_composed(Some(3), false)
}

/// The one-node path CUDA takes for attention (hand-written backward through the scores).
#[test]
fn graph_node_attention_matches_composed_in_values_and_every_gradient() -> Result<()> {
    check_against_composed(Some(3), true)
}

#[test]
fn graph_node_backward_runs_twice_on_one_graph() -> Result<()> {
    let x = rand_var(&[2, 3, 8], 9)?;
    let p = Params::new(8, 32, 32, 10)?;
    let y = residual_mlp_graph(x.as_tensor(), &p.weights(), None)?;
    let loss = y.sqr()?.sum_all()?;
    let g1 = loss.backward()?.get(x.as_tensor()).cloned().expect("grad");
    let g2 = loss.backward()?.get(x.as_tensor()).cloned().expect("grad");
    assert_close(&g1, &g2, 0.0, "second backward")
}

#[test]
fn backward_runs_twice_on_one_graph() -> Result<()> {
    let x = rand_var(&[2, 3, 8], 7)?;
    let p = Params::new(8, 24, 8, 8)?;
    let y = residual_attention(x.as_tensor(), &p.weights(), 2, None)?;
    let loss = y.sqr()?.sum_all()?;
    let g1 = loss.backward()?.get(x.as_tensor()).cloned().expect("grad");
    let g2 = loss.backward()?.get(x.as_tensor()).cloned().expect("grad");
    assert_close(&g1, &g2, 0.0, "second backward")
}

#[test]
fn mismatched_shapes_are_errors_naming_the_op() -> Result<()> {
    let x = rand_var(&[2, 3, 8], 1)?;
    let p = Params::new(8, 16, 16, 2)?;
    let wrong = Params::new(6, 16, 16, 3)?;
    let mut w = p.weights();
    w.out_weight = wrong.vars[4].as_tensor();
    let e = residual_mlp(x.as_tensor(), &w, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("residual Gelu branch"), "{e}");
    // A hidden width of 16 is not 3 x 8: not a qkv projection.
    let e = residual_attention(x.as_tensor(), &p.weights(), 2, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("attention"), "{e}");
    let bad_scale = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu)?;
    let e = residual_mlp(x.as_tensor(), &p.weights(), Some(&bad_scale))
        .unwrap_err()
        .to_string();
    assert!(e.contains("branch scale"), "{e}");
    Ok(())
}

/// With nothing tracked (evaluation) the graph path returns the forward's value itself.
#[test]
fn graph_node_without_gradients_gives_the_composed_value() -> Result<()> {
    let x = rand_var(&[2, 3, 8], 11)?.as_tensor().detach();
    let p = Params::new(8, 24, 8, 12)?;
    let detached: Vec<Tensor> = p.vars.iter().map(|v| v.as_tensor().detach()).collect();
    let w = BranchWeights {
        norm_weight: &detached[0],
        norm_bias: &detached[1],
        norm_eps: 1e-6,
        in_weight: &detached[2],
        in_bias: &detached[3],
        out_weight: &detached[4],
        out_bias: &detached[5],
    };
    let y = residual_attention_graph(&x, &w, 2, None)?;
    assert!(!y.track_op());
    assert_close(
        &y,
        &residual_attention_composed(&x, &w, 2, None)?,
        1e-5,
        "eval value",
    )
}
