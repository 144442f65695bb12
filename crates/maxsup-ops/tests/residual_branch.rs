//! The fused transformer sub-blocks (MLP and attention, each with LayerNorm, stochastic-depth
//! scale and residual join) against their compositions from the separate ops, in the output and
//! in the gradients of the input and all six parameters, and by finite differences.

mod common;
use candle_core::{Device, Result, Tensor};
use common::branch::{check_against_composed, Params};
use common::*;
use maxsup_ops::{
    residual_attention, residual_attention_composed, residual_attention_graph, residual_branches,
    residual_branches_graph, residual_mlp, residual_mlp_composed, residual_mlp_graph, Branch,
    BranchKind, BranchWeights,
};

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

/// A transformer body as CUDA runs it: attention, MLP, attention, MLP sub-blocks (some scaled,
/// one sample dropped) as one graph node, against the composed ops one after another, in the
/// output and the gradients of the input and every parameter.
#[test]
fn a_chain_of_sub_blocks_as_one_node_matches_composed() -> Result<()> {
    let (b, t, d, heads) = (3usize, 4usize, 12usize, 3usize);
    let x = rand_var(&[b, t, d], 40)?;
    let kinds = [
        BranchKind::Attention { heads },
        BranchKind::Mlp,
        BranchKind::Attention { heads },
        BranchKind::Mlp,
    ];
    let params: Vec<Params> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| match k {
            BranchKind::Mlp => Params::new(d, 4 * d, 4 * d, 50 + 10 * i as u64),
            BranchKind::Attention { .. } => Params::new(d, 3 * d, d, 50 + 10 * i as u64),
        })
        .collect::<Result<_>>()?;
    let scale = Tensor::from_vec(vec![1.25f32, 0.0, 2.0], b, &Device::Cpu)?;
    let weights: Vec<BranchWeights> = params.iter().map(|p| p.weights()).collect();
    let branches: Vec<Branch> = kinds
        .iter()
        .zip(&weights)
        .enumerate()
        .map(|(i, (&kind, w))| Branch {
            weights: *w,
            kind,
            scale: (i % 2 == 1).then_some(&scale),
        })
        .collect();
    let graph = || residual_branches_graph(x.as_tensor(), &branches);
    let composed = || {
        let mut y = x.as_tensor().clone();
        for br in &branches {
            y = match br.kind {
                BranchKind::Mlp => residual_mlp_composed(&y, &br.weights, br.scale)?,
                BranchKind::Attention { heads } => {
                    residual_attention_composed(&y, &br.weights, heads, br.scale)?
                }
            };
        }
        Ok(y)
    };
    let mut vars = vec![&x];
    vars.extend(params.iter().flat_map(|p| p.vars.iter()));
    let (yg, gg) = output_and_grads(&vars, &graph, 41)?;
    let (yc, gc) = output_and_grads(&vars, &composed, 41)?;
    assert_close(&yg, &yc, 1e-5, "chain: output")?;
    assert_eq!(gg.len(), 1 + 6 * kinds.len());
    for (i, (g, c)) in gg.iter().zip(&gc).enumerate() {
        assert_close(g, c, 1e-4, &format!("chain: gradient {i}"))?;
        let total = c.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(total > 0.0, "chain: gradient {i} is zero");
    }
    // Off CUDA the public entry runs each sub-block's own op: the same values.
    let cpu = residual_branches(x.as_tensor(), &branches)?;
    assert_close(&cpu, &yc, 1e-5, "chain on the CPU ops")?;
    assert!(residual_branches_graph(x.as_tensor(), &[])
        .unwrap_err()
        .to_string()
        .contains("no sub-block"));
    Ok(())
}
