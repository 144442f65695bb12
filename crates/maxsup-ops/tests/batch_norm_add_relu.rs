//! `batch_norm2d_add_relu` (one op) against `batch_norm2d` then `add_relu` (two): the same
//! output, the same gradients for the input, the residual, the weight and the bias, and the same
//! running statistics, for NCHW inputs with many and few pixels per plane, channels-last inputs,
//! and eval mode; a residual of another shape is an error naming both.

mod common;

use candle_core::{DType, Result, Tensor, Var};
use common::{assert_close, output_and_grads, rand_var};
use maxsup_ops::{is_channels_last, to_channels_last};

fn running(c: usize) -> Result<(Var, Var)> {
    let dev = candle_core::Device::Cpu;
    Ok((
        Var::from_tensor(&Tensor::full(0.2f32, c, &dev)?)?,
        Var::from_tensor(&Tensor::full(0.7f32, c, &dev)?)?,
    ))
}

#[test]
fn fused_block_end_matches_batch_norm_then_add_relu() -> Result<()> {
    for (shape, channels_last, train) in [
        ([3, 5, 12, 12], false, true),
        ([4, 6, 2, 3], false, true),
        ([3, 5, 4, 6], true, true),
        ([2, 4, 5, 5], false, false),
    ] {
        let c = shape[1];
        let x = rand_var(&shape, 21)?;
        let r = rand_var(&shape, 22)?;
        let w = rand_var(&[c], 23)?;
        let b = rand_var(&[c], 24)?;
        let layout = |t: &Var| -> Result<Tensor> {
            match channels_last {
                true => to_channels_last(t.as_tensor()),
                false => Ok(t.as_tensor().clone()),
            }
        };
        let (fused_stats, composed_stats) = (running(c)?, running(c)?);
        let vars = [&x, &r, &w, &b];
        let fused = || {
            let (rm, rv) = &fused_stats;
            maxsup_ops::batch_norm2d_add_relu(
                &layout(&x)?,
                &layout(&r)?,
                w.as_tensor(),
                b.as_tensor(),
                rm,
                rv,
                train,
                0.1,
                1e-5,
            )
        };
        let composed = || {
            let (rm, rv) = &composed_stats;
            let y = maxsup_ops::batch_norm2d(
                &layout(&x)?,
                w.as_tensor(),
                b.as_tensor(),
                rm,
                rv,
                train,
                0.1,
                1e-5,
            )?;
            maxsup_ops::add_relu(&y, &layout(&r)?)
        };
        let what = format!("{shape:?} channels-last {channels_last} train {train}");
        let (y0, g0) = output_and_grads(&vars, &composed, 9)?;
        let (y1, g1) = output_and_grads(&vars, &fused, 9)?;
        assert_eq!(is_channels_last(&y1), channels_last, "{what}: layout");
        assert_close(&y1, &y0, 1e-6, &format!("{what}: output"))?;
        for (i, (a, e)) in g1.iter().zip(&g0).enumerate() {
            assert_close(a, e, 1e-5, &format!("{what}: gradient {i}"))?;
        }
        assert_close(
            fused_stats.0.as_tensor(),
            composed_stats.0.as_tensor(),
            0.0,
            &format!("{what}: running mean"),
        )?;
        assert_close(
            fused_stats.1.as_tensor(),
            composed_stats.1.as_tensor(),
            0.0,
            &format!("{what}: running var"),
        )?;
    }
    Ok(())
}

#[test]
fn a_residual_of_another_shape_is_an_error() -> Result<()> {
    let x = rand_var(&[2, 3, 4, 4], 1)?;
    let r = Tensor::zeros((2, 3, 4, 5), DType::F32, x.device())?;
    let w = Tensor::ones(3, DType::F32, x.device())?;
    let (rm, rv) = running(3)?;
    let err =
        maxsup_ops::batch_norm2d_add_relu(x.as_tensor(), &r, &w, &w, &rm, &rv, true, 0.1, 1e-5)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("[2, 3, 4, 5]") && err.contains("[2, 3, 4, 4]"),
        "{err}"
    );
    Ok(())
}
