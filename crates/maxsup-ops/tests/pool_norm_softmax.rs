//! Max-pool, LayerNorm and softmax custom ops against the composed references and finite
//! differences.

mod common;
use candle_core::{Result, D};
use common::*;
use maxsup_ops::{layer_norm, max_pool2d, reference, softmax_last_dim};

#[test]
fn max_pool_matches_reference() -> Result<()> {
    // (n, c, h, w, kernel, stride, pad)
    for (i, &(n, c, h, w, k, s, p)) in [
        (2, 3, 9, 9, 3, 2, 1),
        (1, 2, 8, 8, 2, 2, 0),
        (2, 2, 7, 10, 3, 1, 1),
        (3, 1, 11, 11, 3, 2, 0),
        (2, 2, 8, 12, 3, 2, 1), // the stem's window on even sizes
        (1, 2, 1, 5, 3, 2, 1),
    ]
    .iter()
    .enumerate()
    {
        let x = rand_var(&[n, c, h, w], 40 + i as u64)?;
        let fast = || max_pool2d(x.as_tensor(), k, s, p);
        let slow = || reference::max_pool2d(x.as_tensor(), k, s, p);
        let (yf, gf) = output_and_grads(&[&x], &fast, 5)?;
        let (ys, gs) = output_and_grads(&[&x], &slow, 5)?;
        assert_close(&yf, &ys, 1e-6, &format!("max_pool case {i} output"))?;
        assert_close(&gf[0], &gs[0], 1e-6, &format!("max_pool case {i} grad"))?;
    }
    Ok(())
}

#[test]
fn layer_norm_matches_reference_and_finite_differences() -> Result<()> {
    for (i, shape) in [vec![4, 7, 33], vec![5, 384], vec![3, 2, 1, 8]]
        .iter()
        .enumerate()
    {
        let d = *shape.last().unwrap();
        let x = rand_var(shape, 50 + i as u64)?;
        let w = rand_var(&[d], 60 + i as u64)?;
        let b = rand_var(&[d], 70 + i as u64)?;
        let fast = || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5);
        let slow = || reference::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5);
        let (yf, gf) = output_and_grads(&[&x, &w, &b], &fast, 7)?;
        let (ys, gs) = output_and_grads(&[&x, &w, &b], &slow, 7)?;
        assert_close(&yf, &ys, 1e-4, "layer_norm output")?;
        for (j, name) in ["dx", "dw", "db"].iter().enumerate() {
            assert_close(
                &gf[j],
                &gs[j],
                1e-4,
                &format!("layer_norm {shape:?} {name}"),
            )?;
        }
        check_finite_diff(&x, &gf[0], &fast, 7, 2e-2)?;
        check_finite_diff(&w, &gf[1], &fast, 7, 2e-2)?;
    }
    Ok(())
}

#[test]
fn softmax_matches_reference_and_finite_differences() -> Result<()> {
    for (i, shape) in [vec![4, 6, 65], vec![3, 10], vec![2, 1]].iter().enumerate() {
        let x = rand_var(shape, 80 + i as u64)?;
        let x3 = || x.as_tensor() * 3.0;
        let fast = || softmax_last_dim(&x3()?);
        let slow = || reference::softmax_last_dim(&x3()?);
        let (yf, gf) = output_and_grads(&[&x], &fast, 9)?;
        let (ys, gs) = output_and_grads(&[&x], &slow, 9)?;
        assert_close(&yf, &ys, 1e-5, "softmax output")?;
        assert_close(&gf[0], &gs[0], 1e-4, &format!("softmax {shape:?} grad"))?;
        let sums = yf.sum(D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(
            sums.iter().all(|s| (s - 1.0).abs() < 1e-5),
            "rows sum to 1: {sums:?}"
        );
        check_finite_diff(&x, &gf[0], &fast, 9, 2e-2)?;
    }
    Ok(())
}

#[test]
fn linear_flattens_leading_dims_like_a_batched_matmul() -> Result<()> {
    let x = rand_var(&[3, 5, 8], 1)?;
    let w = rand_var(&[6, 8], 2)?;
    let b = rand_var(&[6], 3)?;
    let fast = || maxsup_ops::linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()));
    let slow = || {
        let wt = w.as_tensor().broadcast_left(3)?.t()?;
        x.as_tensor().matmul(&wt)?.broadcast_add(b.as_tensor())
    };
    let (yf, gf) = output_and_grads(&[&x, &w, &b], &fast, 4)?;
    let (ys, gs) = output_and_grads(&[&x, &w, &b], &slow, 4)?;
    assert_close(&yf, &ys, 1e-5, "linear output")?;
    for j in 0..3 {
        assert_close(&gf[j], &gs[j], 1e-5, "linear grads")?;
    }
    let refr = || reference::linear(x.as_tensor(), w.as_tensor(), None);
    let nob = || maxsup_ops::linear(x.as_tensor(), w.as_tensor(), None);
    let (yr, gr) = output_and_grads(&[&x, &w], &refr, 5)?;
    let (yn, gn) = output_and_grads(&[&x, &w], &nob, 5)?;
    assert_close(&yn, &yr, 1e-5, "linear without bias")?;
    assert_close(&gn[0], &gr[0], 1e-5, "linear without bias dx")?;
    assert_close(&gn[1], &gr[1], 1e-5, "linear without bias dw")?;
    check_finite_diff(&w, &gf[1], &fast, 4, 1e-2)
}

#[test]
fn relu_matches_candle_relu() -> Result<()> {
    let x = rand_var(&[3, 4, 5, 7], 12)?;
    let fast = || maxsup_ops::relu(x.as_tensor());
    let slow = || x.as_tensor().relu();
    let (yf, gf) = output_and_grads(&[&x], &fast, 13)?;
    let (ys, gs) = output_and_grads(&[&x], &slow, 13)?;
    assert_close(&yf, &ys, 0.0, "relu output")?;
    assert_close(&gf[0], &gs[0], 0.0, "relu grad")
}

#[test]
fn batched_matmul_matches_candle_including_transposed_views() -> Result<()> {
    let a = rand_var(&[2, 3, 5, 4], 21)?;
    let b = rand_var(&[2, 3, 6, 4], 22)?; // used as b.t(): [2, 3, 4, 6]
    let fast = || maxsup_ops::matmul(a.as_tensor(), &b.as_tensor().t()?);
    let slow = || a.as_tensor().matmul(&b.as_tensor().t()?.contiguous()?);
    let (yf, gf) = output_and_grads(&[&a, &b], &fast, 23)?;
    let (ys, gs) = output_and_grads(&[&a, &b], &slow, 23)?;
    assert_close(&yf, &ys, 1e-5, "matmul output")?;
    assert_close(&gf[0], &gs[0], 1e-5, "matmul da")?;
    assert_close(&gf[1], &gs[1], 1e-5, "matmul db")?;
    // a permuted (non-collapsible batch strides) operand
    let p = a.as_tensor().permute((1, 0, 2, 3))?; // [3, 2, 5, 4]
    let q = rand_tensor(&[3, 2, 4, 7], 24)?;
    assert_close(
        &maxsup_ops::matmul(&p, &q)?,
        &p.contiguous()?.matmul(&q)?,
        1e-5,
        "permuted matmul",
    )?;
    assert!(maxsup_ops::matmul(&p, &rand_tensor(&[3, 2, 5, 7], 1)?).is_err());
    Ok(())
}

#[test]
fn gelu_erf_matches_candle_and_finite_differences() -> Result<()> {
    let x = rand_var(&[4, 33], 31)?;
    let x3 = || x.as_tensor() * 3.0;
    let fast = || maxsup_ops::gelu_erf(&x3()?);
    let slow = || x3()?.gelu_erf();
    let (yf, gf) = output_and_grads(&[&x], &fast, 32)?;
    let (ys, gs) = output_and_grads(&[&x], &slow, 32)?;
    assert_close(&yf, &ys, 1e-5, "gelu output")?;
    assert_close(&gf[0], &gs[0], 1e-4, "gelu grad")?;
    check_finite_diff(&x, &gf[0], &fast, 32, 2e-2)
}

/// `add_relu(a, b)` equals `relu(a + b)` composed from candle ops, in values and both gradients.
#[test]
fn add_relu_matches_composed() -> Result<()> {
    let a = rand_var(&[3, 4, 5, 6], 140)?;
    let b = rand_var(&[3, 4, 5, 6], 141)?;
    let fast = || maxsup_ops::add_relu(a.as_tensor(), b.as_tensor());
    let slow = || (a.as_tensor() + b.as_tensor())?.relu();
    let (yf, gf) = output_and_grads(&[&a, &b], &fast, 15)?;
    let (ys, gs) = output_and_grads(&[&a, &b], &slow, 15)?;
    assert_close(&yf, &ys, 1e-6, "add_relu output")?;
    assert_close(&gf[0], &gs[0], 1e-6, "add_relu da")?;
    assert_close(&gf[1], &gs[1], 1e-6, "add_relu db")?;
    assert!(maxsup_ops::add_relu(a.as_tensor(), &a.as_tensor().narrow(0, 0, 1)?).is_err());
    Ok(())
}
