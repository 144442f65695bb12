//! The fused softmax-family loss kernels (CE, label smoothing, MaxSup, logit penalty) against
//! maxsup-loss's CPU losses on the same f32 logits: the batch-mean loss and its gradient, with
//! ties for the maximum (the gradient goes to the first), two classes, large logits and more
//! classes than threads.

mod common;

use candle_core::{Device, Tensor, Var};
use common::random;
use maxsup_kernel_emu::{
    launch, softmax_loss_grad_f32, softmax_loss_mean_f32, softmax_loss_rows_f32,
};
use maxsup_ops::kernel_geometry as geom;
use maxsup_ops::softmax_loss::LossTerms;

type CpuLoss = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// The public losses and the terms they are made of.
fn losses() -> Vec<(&'static str, LossTerms, CpuLoss)> {
    vec![
        (
            "cross entropy",
            LossTerms {
                ce: 1.0,
                ..LossTerms::default()
            },
            |z, y| maxsup_loss::cross_entropy(z, y),
        ),
        (
            "label smoothing 0.1",
            LossTerms {
                ce: 0.9,
                uniform: 0.1,
                ..LossTerms::default()
            },
            |z, y| maxsup_loss::label_smoothing(z, y, 0.1),
        ),
        (
            "maxsup 0.15",
            LossTerms {
                ce: 1.0,
                maxsup: 0.15,
                ..LossTerms::default()
            },
            |z, y| maxsup_loss::maxsup(z, y, 0.15),
        ),
        (
            "logit penalty 2e-3",
            LossTerms {
                ce: 1.0,
                lp: 2e-3,
                ..LossTerms::default()
            },
            |z, y| maxsup_loss::logit_penalty(z, y, 2e-3),
        ),
    ]
}

/// The emulated loss and gradient of `z` (`[b, k]`) with targets `y`.
fn emulated(z: &[f32], y: &[u32], b: usize, k: usize, terms: LossTerms) -> (f32, Vec<f32>) {
    let mut rows = vec![0f64; b];
    let mut out = [0f32];
    let mut g = vec![0f32; b * k];
    let (zp, yp, rp, op, gp) = (
        z.as_ptr(),
        y.as_ptr(),
        rows.as_mut_ptr(),
        out.as_mut_ptr(),
        g.as_mut_ptr(),
    );
    let k32 = k as i32;
    launch(geom::loss_rows(b), || unsafe {
        softmax_loss_rows_f32(zp, yp, terms, rp, k32)
    })
    .expect("rows");
    launch(geom::loss_mean(), || unsafe {
        softmax_loss_mean_f32(rp, op, b as i32)
    })
    .expect("mean");
    launch(geom::loss_rows(b), || unsafe {
        softmax_loss_grad_f32(zp, yp, terms, gp, k32, 1.0 / b as f64)
    })
    .expect("gradient");
    (out[0], g)
}

fn norm_relative_error(got: &[f32], want: &[f32]) -> f64 {
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn fused_loss_kernels_match_the_cpu_losses() {
    for (b, k, scale) in [
        (7usize, 10usize, 3.0f32),
        (5, 1000, 2.0),
        (3, 2, 1.0),
        (33, 300, 40.0),
    ] {
        let mut z = random::<f32>(b * k, (b * k) as u64, scale, 0.0);
        if k >= 4 {
            // Row 0: a tie for the maximum at classes 1 and 3 (the first wins).
            z[1] = 10.0 * scale;
            z[3] = 10.0 * scale;
        }
        let y: Vec<u32> = (0..b).map(|i| ((i * 7 + 2) % k) as u32).collect();
        for (name, terms, cpu_loss) in losses() {
            let zv =
                Var::from_tensor(&Tensor::from_slice(&z, (b, k), &Device::Cpu).unwrap()).unwrap();
            let yt = Tensor::from_slice(&y, b, &Device::Cpu).unwrap();
            let loss = cpu_loss(zv.as_tensor(), &yt).unwrap();
            let want_loss = loss.to_scalar::<f32>().unwrap();
            let grads = loss.backward().unwrap();
            let want_g = grads
                .get(zv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let (got_loss, got_g) = emulated(&z, &y, b, k, terms);
            let case = format!("{name} b={b} k={k}");
            let err = ((got_loss - want_loss) / want_loss.abs().max(1.0)).abs();
            assert!(err < 1e-6, "{case}: loss {got_loss} vs {want_loss}");
            let err = norm_relative_error(&got_g, &want_g);
            assert!(err < 1e-6, "{case}: gradient relative error {err:e}");
            if k >= 4 && name.starts_with("maxsup") {
                // MaxSup's gradient at the tie: +alpha/B (less the softmax share) only at class 1.
                assert!(
                    got_g[1] > got_g[3],
                    "{case}: the tie's first index gets the push"
                );
            }
        }
    }
}
