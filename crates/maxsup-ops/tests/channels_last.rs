//! Channels-last inputs run the NHWC kernels (CPU ones here; the GPU check runs the CUDA ones)
//! and must give the NCHW path's values and gradients, in a channels-last result.

mod common;

use candle_core::{Result, Tensor, Var};
use common::{assert_close, output_and_grads, rand_var};
use maxsup_ops::{is_channels_last, to_channels_last};

/// `f` on the NCHW input and on its channels-last copy: outputs and the gradients of `vars`
/// (the input first) agree to `tol`; the channels-last output is channels-last.
fn same_both_ways(
    what: &str,
    x: &Var,
    others: &[&Var],
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
    tol: f32,
) -> Result<()> {
    let vars: Vec<&Var> = std::iter::once(x).chain(others.iter().copied()).collect();
    let (y0, g0) = output_and_grads(&vars, &|| f(x.as_tensor()), 5)?;
    let (y1, g1) = output_and_grads(&vars, &|| f(&to_channels_last(x.as_tensor())?), 5)?;
    assert!(!is_channels_last(&y0), "{what}: NCHW in, NCHW out");
    assert!(
        is_channels_last(&y1),
        "{what}: channels-last in, channels-last out"
    );
    assert_close(&y1, &y0, tol, &format!("{what} output"))?;
    for (i, (a, b)) in g1.iter().zip(&g0).enumerate() {
        assert_close(a, b, tol, &format!("{what} gradient {i}"))?;
    }
    Ok(())
}

#[test]
fn conv2d_channels_last_matches_nchw() -> Result<()> {
    for (c, hw, o, k, stride, pad, bias) in [
        (3, 15, 8, 3, 1, 1, false),
        (8, 12, 16, 3, 2, 1, true),
        (16, 9, 32, 1, 2, 0, false),
        (4, 10, 6, 7, 2, 3, false),
    ] {
        let x = rand_var(&[2, c, hw, hw], 1)?;
        let w = rand_var(&[o, c, k, k], 2)?;
        let b = rand_var(&[o], 3)?;
        let f = |x: &Tensor| {
            let bias = bias.then(|| b.as_tensor());
            maxsup_ops::conv2d(x, w.as_tensor(), bias, stride, pad, 1, 1)
        };
        let what = format!("conv2d c{c} {hw}px o{o} k{k} s{stride}");
        let others: Vec<&Var> = if bias { vec![&w, &b] } else { vec![&w] };
        same_both_ways(&what, &x, &others, &f, 1e-5)?;
    }
    Ok(())
}

#[test]
fn batch_norm_channels_last_matches_nchw_and_updates_the_same_statistics() -> Result<()> {
    for relu in [false, true] {
        let x = rand_var(&[3, 5, 4, 6], 11)?;
        let w = rand_var(&[5], 12)?;
        let b = rand_var(&[5], 13)?;
        let stats = || -> Result<(Var, Var)> {
            Ok((
                Var::from_tensor(&Tensor::zeros(5, candle_core::DType::F32, x.device())?)?,
                Var::from_tensor(&Tensor::ones(5, candle_core::DType::F32, x.device())?)?,
            ))
        };
        let (nchw, cl) = (stats()?, stats()?);
        let bn = |x: &Tensor, (rm, rv): &(Var, Var)| {
            let f = match relu {
                true => maxsup_ops::batch_norm2d_relu,
                false => maxsup_ops::batch_norm2d,
            };
            f(x, w.as_tensor(), b.as_tensor(), rm, rv, true, 0.1, 1e-5)
        };
        let vars = [&x, &w, &b];
        let (y0, g0) = output_and_grads(&vars, &|| bn(x.as_tensor(), &nchw), 7)?;
        let (y1, g1) = output_and_grads(&vars, &|| bn(&to_channels_last(x.as_tensor())?, &cl), 7)?;
        assert!(is_channels_last(&y1), "relu {relu}: channels-last out");
        assert_close(&y1, &y0, 1e-5, "batch_norm2d output")?;
        for (i, (a, g)) in g1.iter().zip(&g0).enumerate() {
            assert_close(
                a,
                g,
                1e-4,
                &format!("batch_norm2d (relu {relu}) gradient {i}"),
            )?;
        }
        assert_close(cl.0.as_tensor(), nchw.0.as_tensor(), 1e-6, "running mean")?;
        assert_close(cl.1.as_tensor(), nchw.1.as_tensor(), 1e-6, "running var")?;
    }
    Ok(())
}

#[test]
fn pooling_and_activations_channels_last_match_nchw() -> Result<()> {
    let x = rand_var(&[2, 6, 9, 8], 21)?;
    same_both_ways(
        "max_pool2d 3/2/1",
        &x,
        &[],
        &|x| maxsup_ops::max_pool2d(x, 3, 2, 1),
        0.0,
    )?;
    same_both_ways(
        "max_pool2d 2/2/0",
        &x,
        &[],
        &|x| maxsup_ops::max_pool2d(x, 2, 2, 0),
        0.0,
    )?;
    same_both_ways("relu", &x, &[], &|x| maxsup_ops::relu(x), 0.0)?;
    // The residual join meets an NCHW operand (transposed to match) and a channels-last one.
    let other = rand_var(&[2, 6, 9, 8], 22)?;
    same_both_ways(
        "add_relu with an NCHW rhs",
        &x,
        &[&other],
        &|x| maxsup_ops::add_relu(x, other.as_tensor()),
        0.0,
    )?;
    same_both_ways(
        "add_relu with a channels-last rhs",
        &x,
        &[&other],
        &|x| maxsup_ops::add_relu(x, &to_channels_last(other.as_tensor())?),
        0.0,
    )?;
    Ok(())
}

/// Dtypes without a fused kernel (f64: the GPU check's reference) run the composed reference,
/// which reads a channels-last input through its strides.
#[test]
fn the_composed_reference_reads_channels_last_inputs() -> Result<()> {
    let x = common::rand_tensor(&[2, 4, 9, 9], 31)?.to_dtype(candle_core::DType::F64)?;
    let w = common::rand_tensor(&[6, 4, 3, 3], 32)?.to_dtype(candle_core::DType::F64)?;
    let cl = to_channels_last(&x)?;
    assert!(is_channels_last(&cl));
    let diff =
        |a: Tensor, b: Tensor| -> Result<f64> { (a - b)?.abs()?.max_all()?.to_scalar::<f64>() };
    let conv = |x: &Tensor| maxsup_ops::conv2d(x, &w, None, 2, 1, 1, 1);
    assert!(diff(conv(&cl)?, conv(&x)?)? < 1e-12, "conv2d");
    let pool = |x: &Tensor| maxsup_ops::max_pool2d(x, 3, 2, 1);
    assert_eq!(diff(pool(&cl)?, pool(&x)?)?, 0.0, "max_pool2d");
    assert_eq!(
        diff(
            maxsup_ops::add_relu(&cl, &x)?,
            maxsup_ops::add_relu(&x, &x)?
        )?,
        0.0
    );
    let bn = |x: &Tensor| -> Result<Tensor> {
        let rm = Var::from_tensor(&Tensor::zeros(4, candle_core::DType::F64, x.device())?)?;
        let rv = Var::from_tensor(&Tensor::ones(4, candle_core::DType::F64, x.device())?)?;
        let (g, b) = (rm.as_tensor().ones_like()?, rm.as_tensor().zeros_like()?);
        maxsup_ops::batch_norm2d_relu(x, &g, &b, &rm, &rv, true, 0.1, 1e-5)
    };
    assert!(diff(bn(&cl)?, bn(&x)?)? < 1e-12, "batch_norm2d_relu");
    Ok(())
}
