//! The fused attention op against the same attention composed from candle ops, and finite
//! differences.

mod common;
use candle_core::{Result, Var};
use common::*;
use maxsup_ops::{attention_qkv, attention_qkv_composed};

/// (batch, tokens, heads, head_dim)
const CASES: &[(usize, usize, usize, usize)] =
    &[(2, 5, 3, 4), (3, 1, 2, 8), (1, 9, 1, 5), (2, 17, 4, 16)];

#[test]
fn matches_composed_outputs_and_gradients() -> Result<()> {
    for (i, &(b, n, h, hd)) in CASES.iter().enumerate() {
        let qkv = Var::from_tensor(&(rand_tensor(&[b, n, 3 * h * hd], 200 + i as u64)? * 2.0)?)?;
        let fast = || attention_qkv(qkv.as_tensor(), h);
        let slow = || attention_qkv_composed(qkv.as_tensor(), h);
        let seed = 17 + i as u64;
        let (yf, gf) = output_and_grads(&[&qkv], &fast, seed)?;
        let (ys, gs) = output_and_grads(&[&qkv], &slow, seed)?;
        assert_eq!(yf.dims(), &[b, n, h * hd]);
        assert_close(&yf, &ys, 1e-5, &format!("attention case {i} output"))?;
        assert_close(&gf[0], &gs[0], 1e-4, &format!("attention case {i} dqkv"))?;
        check_finite_diff(&qkv, &gf[0], &fast, seed, 2e-2)?;
    }
    Ok(())
}

#[test]
fn rejects_a_width_not_divisible_by_three_heads() -> Result<()> {
    let qkv = rand_tensor(&[2, 4, 20], 5)?;
    assert!(attention_qkv(&qkv, 3).is_err());
    assert!(attention_qkv(&qkv.narrow(2, 0, 18)?, 0).is_err());
    Ok(())
}
