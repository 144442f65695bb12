//! The transformer sub-blocks' check against their compositions (`residual_branch.rs`,
//! `residual_branch_fused_attention.rs`): random parameters, and output and gradients compared.

use super::*;
use candle_core::{Device, Result, Tensor, Var};
use maxsup_ops::{
    residual_attention, residual_attention_composed, residual_attention_graph, residual_mlp,
    residual_mlp_composed, residual_mlp_graph, BranchWeights,
};

pub struct Params {
    pub vars: Vec<Var>,
}

impl Params {
    /// LayerNorm weight/bias, `in` weight/bias (`[h, d]`), `out` weight/bias (`[d, w]`).
    pub fn new(d: usize, h: usize, w: usize, seed: u64) -> Result<Self> {
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

    pub fn weights(&self) -> BranchWeights<'_> {
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
pub fn check_against_composed(heads: Option<usize>, graph: bool) -> Result<()> {
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
