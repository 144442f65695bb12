//! Fused BatchNorm2d against the composed reference, PyTorch's running-stat rule and finite
//! differences.

mod common;
use candle_core::{Result, Tensor, Var};
use common::*;
use maxsup_ops::{batch_norm2d, reference};

fn stats(c: usize) -> Result<(Var, Var)> {
    Ok((
        Var::zeros(c, candle_core::DType::F32, &candle_core::Device::Cpu)?,
        Var::ones(c, candle_core::DType::F32, &candle_core::Device::Cpu)?,
    ))
}

#[test]
fn train_mode_matches_reference_and_updates_running_stats() -> Result<()> {
    // Planes of fewer than 64 pixels take the image-major kernels, the others the plane ones;
    // 70 channels of one pixel span several channel blocks.
    for (i, &(n, c, h, w)) in [
        (4, 3, 5, 5),
        (2, 8, 3, 7),
        (16, 2, 1, 1),
        (4, 70, 1, 1),
        (3, 5, 2, 2),
        (2, 3, 9, 8),
    ]
    .iter()
    .enumerate()
    {
        let x0 = rand_tensor(&[n, c, h, w], 90 + i as u64)?;
        // Shift/scale channels so the statistics are non-trivial.
        let x = Var::from_tensor(&((x0 * 2.0)? + 0.5)?)?;
        let wt = rand_var(&[c], 91 + i as u64)?;
        let b = rand_var(&[c], 92 + i as u64)?;
        let (rm_f, rv_f) = stats(c)?;
        let (rm_s, rv_s) = stats(c)?;
        let fast = || {
            batch_norm2d(
                x.as_tensor(),
                wt.as_tensor(),
                b.as_tensor(),
                &rm_f,
                &rv_f,
                true,
                0.1,
                1e-5,
            )
        };
        let slow = || {
            reference::batch_norm2d(
                x.as_tensor(),
                wt.as_tensor(),
                b.as_tensor(),
                &rm_s,
                &rv_s,
                true,
                0.1,
                1e-5,
            )
        };
        let (yf, gf) = output_and_grads(&[&x, &wt, &b], &fast, 11)?;
        let (ys, gs) = output_and_grads(&[&x, &wt, &b], &slow, 11)?;
        assert_close(&yf, &ys, 1e-4, "bn output")?;
        for (j, name) in ["dx", "dw", "db"].iter().enumerate() {
            assert_close(&gf[j], &gs[j], 1e-4, &format!("bn case {i} {name}"))?;
        }
        assert_close(rm_f.as_tensor(), rm_s.as_tensor(), 1e-5, "running_mean")?;
        assert_close(rv_f.as_tensor(), rv_s.as_tensor(), 1e-5, "running_var")?;
        // Closed form for channel 0 after one update from (0, 1).
        let xs = x
            .as_tensor()
            .narrow(1, 0, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let m = xs.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64;
        let uv = xs.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
        let rm0 = rm_f.as_tensor().to_vec1::<f32>()?[0] as f64;
        let rv0 = rv_f.as_tensor().to_vec1::<f32>()?[0] as f64;
        assert!(
            (rm0 - 0.1 * m).abs() < 1e-5,
            "running_mean {rm0} vs {}",
            0.1 * m
        );
        assert!(
            (rv0 - (0.9 + 0.1 * uv)).abs() < 1e-4,
            "running_var {rv0} vs {}",
            0.9 + 0.1 * uv
        );
    }
    Ok(())
}

#[test]
fn train_mode_matches_finite_differences() -> Result<()> {
    // Both CPU paths: planes of 12 pixels (image-major) and of 64 (plane by plane).
    for (i, &(h, w)) in [(4, 3), (8, 8)].iter().enumerate() {
        finite_differences_case(&[3, 2, h, w], 5 + 3 * i as u64)?;
    }
    Ok(())
}

fn finite_differences_case(shape: &[usize], seed: u64) -> Result<()> {
    let x = rand_var(shape, seed)?;
    let wt = rand_var(&[2], seed + 1)?;
    let b = rand_var(&[2], seed + 2)?;
    let (rm, rv) = stats(2)?;
    let f = || {
        batch_norm2d(
            x.as_tensor(),
            wt.as_tensor(),
            b.as_tensor(),
            &rm,
            &rv,
            true,
            0.1,
            1e-5,
        )
    };
    let (_, g) = output_and_grads(&[&x, &wt, &b], &f, 3)?;
    check_finite_diff(&x, &g[0], &f, 3, 2e-2)?;
    check_finite_diff(&wt, &g[1], &f, 3, 2e-2)
}

#[test]
fn eval_mode_uses_running_stats_and_leaves_them_alone() -> Result<()> {
    let x = rand_tensor(&[2, 3, 4, 4], 1)?;
    let wt = Tensor::new(&[1f32, 2., 3.], &candle_core::Device::Cpu)?;
    let b = Tensor::new(&[0f32, 1., -1.], &candle_core::Device::Cpu)?;
    let rm = Var::new(&[0.5f32, -0.5, 0.0], &candle_core::Device::Cpu)?;
    let rv = Var::new(&[4f32, 1., 0.25], &candle_core::Device::Cpu)?;
    let y = batch_norm2d(&x, &wt, &b, &rm, &rv, false, 0.1, 0.0)?;
    let expect = x
        .broadcast_sub(&rm.as_tensor().reshape((1, 3, 1, 1))?)?
        .broadcast_div(&rv.as_tensor().sqrt()?.reshape((1, 3, 1, 1))?)?
        .broadcast_mul(&wt.reshape((1, 3, 1, 1))?)?
        .broadcast_add(&b.reshape((1, 3, 1, 1))?)?;
    assert_close(&y, &expect, 1e-6, "eval output")?;
    assert_eq!(rm.as_tensor().to_vec1::<f32>()?, vec![0.5, -0.5, 0.0]);
    Ok(())
}

#[test]
fn rejects_wrong_channel_count() -> Result<()> {
    let x = rand_tensor(&[2, 3, 4, 4], 1)?;
    let (rm, rv) = stats(3)?;
    let w = rand_tensor(&[4], 2)?;
    let b = rand_tensor(&[3], 3)?;
    let err = batch_norm2d(&x, &w, &b, &rm, &rv, true, 0.1, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight"), "{err}");
    Ok(())
}

/// The fused `relu(batch_norm2d(x))` equals the two ops composed from the reference, in values,
/// all three gradients and the running statistics; eval mode too.
#[test]
fn fused_relu_matches_reference_then_relu() -> Result<()> {
    for (i, &(n, c, h, w)) in [(4, 3, 5, 5), (2, 8, 3, 7), (4, 70, 1, 1), (2, 3, 9, 8)]
        .iter()
        .enumerate()
    {
        let x = Var::from_tensor(&(rand_tensor(&[n, c, h, w], 120 + i as u64)? * 2.0)?)?;
        let wt = rand_var(&[c], 121 + i as u64)?;
        let b = rand_var(&[c], 122 + i as u64)?;
        for train in [true, false] {
            let (rm_f, rv_f) = stats(c)?;
            let (rm_s, rv_s) = stats(c)?;
            let fast = || {
                maxsup_ops::batch_norm2d_relu(
                    x.as_tensor(),
                    wt.as_tensor(),
                    b.as_tensor(),
                    &rm_f,
                    &rv_f,
                    train,
                    0.1,
                    1e-5,
                )
            };
            let slow = || {
                reference::batch_norm2d(
                    x.as_tensor(),
                    wt.as_tensor(),
                    b.as_tensor(),
                    &rm_s,
                    &rv_s,
                    train,
                    0.1,
                    1e-5,
                )?
                .relu()
            };
            let (yf, gf) = output_and_grads(&[&x, &wt, &b], &fast, 13)?;
            let (ys, gs) = output_and_grads(&[&x, &wt, &b], &slow, 13)?;
            let zeros = yf.eq(0f32)?.to_dtype(candle_core::DType::F32)?.mean_all()?;
            let zeros = zeros.to_scalar::<f32>()?;
            assert!(
                zeros > 0.2 && zeros < 0.8,
                "case {i}: {zeros} of outputs clipped"
            );
            assert_close(&yf, &ys, 1e-4, "bn+relu output")?;
            for (j, name) in ["dx", "dw", "db"].iter().enumerate() {
                assert_close(
                    &gf[j],
                    &gs[j],
                    1e-4,
                    &format!("bn+relu case {i} train {train} {name}"),
                )?;
            }
            assert_close(rm_f.as_tensor(), rm_s.as_tensor(), 1e-5, "running_mean")?;
            assert_close(rv_f.as_tensor(), rv_s.as_tensor(), 1e-5, "running_var")?;
        }
    }
    Ok(())
}
