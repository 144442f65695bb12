//! Online LS and Zipf-LS against the official algorithms (PyTorch fixture), finite differences,
//! and checkpoint round trips.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use maxsup_loss::*;

const B: usize = 6;
const K: usize = 5;

#[test]
fn online_label_smoothing_follows_the_official_algorithm_over_two_epochs() {
    let r = reference();
    let mut ols = OnlineLabelSmoothing::new(K, &Device::Cpu).unwrap();
    for (e, epoch) in r["ols"]["epochs"].as_array().unwrap().iter().enumerate() {
        for (i, batch) in epoch.as_array().unwrap().iter().enumerate() {
            let z = var(&floats(&batch["logits"]), (B, K), DType::F64);
            let y = targets(&ints(&batch["targets"]));
            let (value, grad) = value_and_grad(&z, ols.forward(z.as_tensor(), &y, true));
            let what = format!("epoch {e} batch {i}");
            assert_close(value, batch["value"].as_f64().unwrap(), 1e-6, &what);
            assert_all_close(&grad, &floats(&batch["grad"]), 1e-6, &what);
        }
        ols.end_epoch().unwrap();
        let s: Vec<f64> = ols
            .supervision()
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_all_close(
            &s,
            &floats(&r["ols"]["supervision_after"][e]),
            1e-6,
            &format!("S after epoch {e}"),
        );
    }
}

#[test]
fn online_label_smoothing_eval_batches_do_not_change_the_state() {
    let mut ols = OnlineLabelSmoothing::new(3, &Device::Cpu).unwrap();
    let z = Tensor::new(&[[3.0f32, 0.0, 0.0]], &Device::Cpu).unwrap();
    ols.forward(&z, &targets(&[0]), false).unwrap();
    ols.end_epoch().unwrap();
    // No correct training sample: every row is uniform.
    let s: Vec<f32> = ols.supervision().flatten_all().unwrap().to_vec1().unwrap();
    assert!(s.iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-7), "{s:?}");
}

#[test]
fn online_label_smoothing_resumes_exactly_from_its_state() {
    let r = reference();
    let batches = r["ols"]["epochs"][0].as_array().unwrap();
    let run = |restore_after_first: bool| -> Vec<f32> {
        let mut ols = OnlineLabelSmoothing::new(K, &Device::Cpu).unwrap();
        for (i, batch) in batches.iter().enumerate() {
            let z = Tensor::from_vec(floats(&batch["logits"]), (B, K), &Device::Cpu).unwrap();
            ols.forward(&z, &targets(&ints(&batch["targets"])), true)
                .unwrap();
            if restore_after_first && i == 0 {
                let saved: HashMap<String, Tensor> = ols.state();
                let mut fresh = OnlineLabelSmoothing::new(K, &Device::Cpu).unwrap();
                fresh.load_state(&saved).unwrap();
                ols = fresh;
            }
        }
        ols.end_epoch().unwrap();
        ols.supervision().flatten_all().unwrap().to_vec1().unwrap()
    };
    assert_eq!(run(false), run(true));
    let mut ols = OnlineLabelSmoothing::new(K, &Device::Cpu).unwrap();
    let mut bad = ols.state();
    bad.insert(
        "ols.next_count".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let msg = ols.load_state(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("`ols.next_count` has shape [4], expected [5]"),
        "{msg}"
    );
}

/// Central finite differences of `f` at `x` (f64), compared with the autograd gradient.
fn finite_difference_check(
    x: &[f64],
    shape: (usize, usize),
    f: impl Fn(&Tensor) -> f64,
    grad: &[f64],
) {
    let h = 1e-6;
    for i in 0..x.len() {
        let mut plus = x.to_vec();
        let mut minus = x.to_vec();
        plus[i] += h;
        minus[i] -= h;
        let tp = Tensor::from_vec(plus, shape, &Device::Cpu).unwrap();
        let tm = Tensor::from_vec(minus, shape, &Device::Cpu).unwrap();
        let numeric = (f(&tp) - f(&tm)) / (2.0 * h);
        assert_close(grad[i], numeric, 1e-6, &format!("d/dz[{i}]"));
    }
}

#[test]
fn online_label_smoothing_gradient_matches_finite_differences() {
    let r = reference();
    let mut ols = OnlineLabelSmoothing::new(K, &Device::Cpu).unwrap();
    for batch in r["ols"]["epochs"][0].as_array().unwrap() {
        let z = Tensor::from_vec(floats(&batch["logits"]), (B, K), &Device::Cpu).unwrap();
        ols.forward(&z, &targets(&ints(&batch["targets"])), true)
            .unwrap();
    }
    ols.end_epoch().unwrap(); // a non-trivial supervision matrix
    let batch = &r["ols"]["epochs"][1][0];
    let x = floats(&batch["logits"]);
    let y = targets(&ints(&batch["targets"]));
    let z = var(&x, (B, K), DType::F64);
    let (_, grad) = value_and_grad(&z, ols.clone().forward(z.as_tensor(), &y, false));
    finite_difference_check(
        &x,
        (B, K),
        |t| {
            ols.clone()
                .forward(t, &y, false)
                .unwrap()
                .to_scalar()
                .unwrap()
        },
        &grad,
    );
}

fn zipf_inputs() -> (Vec<f64>, Tensor, Tensor, f64) {
    let r = reference();
    let zr = &r["zipf"];
    let hw = ints(&zr["dense_hw"]);
    let dense = Tensor::from_vec(
        floats(&zr["dense"]),
        (B, K, hw[0] as usize, hw[1] as usize),
        &Device::Cpu,
    )
    .unwrap();
    (
        floats(&zr["logits"]),
        dense,
        targets(&ints(&zr["targets"])),
        zr["weight"].as_f64().unwrap(),
    )
}

#[test]
fn zipf_label_smoothing_follows_the_official_algorithm() {
    let r = reference();
    let (x, dense, y, weight) = zipf_inputs();
    let zipf = ZipfLabelSmoothing::new(weight);
    for (dtype, rel) in [(DType::F64, 1e-10), (DType::F32, 2e-5)] {
        let z = var(&x, (B, K), dtype);
        let (value, grad) = value_and_grad(
            &z,
            zipf.forward(z.as_tensor(), &dense.to_dtype(dtype).unwrap(), &y),
        );
        assert_close(
            value,
            r["zipf"]["value"].as_f64().unwrap(),
            rel,
            "zipf value",
        );
        assert_all_close(&grad, &floats(&r["zipf"]["grad"]), rel, "zipf grad");
    }
    let z = Tensor::from_vec(x, (B, K), &Device::Cpu).unwrap();
    let kl = zipf
        .zipf_term(&z, &dense, &y)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_close(kl, r["zipf"]["kl"].as_f64().unwrap(), 1e-10, "zipf kl");
}

#[test]
fn zipf_label_smoothing_gradient_matches_finite_differences() {
    let (x, dense, y, weight) = zipf_inputs();
    let zipf = ZipfLabelSmoothing::new(weight);
    let z = var(&x, (B, K), DType::F64);
    let (_, grad) = value_and_grad(&z, zipf.forward(z.as_tensor(), &dense, &y));
    finite_difference_check(
        &x,
        (B, K),
        |t| zipf.forward(t, &dense, &y).unwrap().to_scalar().unwrap(),
        &grad,
    );
}

#[test]
fn zipf_rejects_dense_logits_of_the_wrong_shape() {
    let (x, _, y, _) = zipf_inputs();
    let z = Tensor::from_vec(x, (B, K), &Device::Cpu).unwrap();
    let dense = Tensor::zeros((B, K + 1, 2, 2), DType::F64, &Device::Cpu).unwrap();
    let msg = ZipfLabelSmoothing::default()
        .forward(&z, &dense, &y)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("dense logits must have shape [6, 5, H, W]"),
        "{msg}"
    );
}

#[test]
fn criterion_dispatches_every_loss_by_name() {
    let r = reference();
    let x = floats(&r["logits"]);
    let z = Tensor::from_vec(x.clone(), (B, K), &Device::Cpu).unwrap();
    let y = targets(&ints(&r["targets"]));
    let (_, dense, _, _) = zipf_inputs();
    let epochs = 10;
    for kind in LossKind::ALL {
        let mut c = Criterion::new(CriterionConfig::new(kind, K, epochs), &Device::Cpu).unwrap();
        c.set_epoch(0);
        let mut input = LossInput::new(&z, &y);
        if c.needs_dense_logits() {
            input.dense_logits = Some(&dense);
        }
        let got = c.loss(&input, true).unwrap().to_scalar::<f64>().unwrap();
        let expected = match kind {
            LossKind::Ce => cross_entropy(&z, &y),
            LossKind::Ls => label_smoothing(&z, &y, 0.1),
            LossKind::Maxsup => maxsup(&z, &y, 0.1),
            LossKind::Lp => logit_penalty(&z, &y, 2e-3),
            LossKind::Focal => focal(&z, &y, 2.0),
            LossKind::Ols => OnlineLabelSmoothing::new(K, &Device::Cpu)
                .unwrap()
                .forward(&z, &y, true),
            LossKind::Zipf => ZipfLabelSmoothing::new(0.1).forward(&z, &dense, &y),
        }
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        assert_close(got, expected, 1e-12, kind.name());
        assert_eq!(kind.name().parse::<LossKind>().unwrap(), kind);
    }
}

#[test]
fn criterion_with_soft_targets_adds_maxsup_to_the_soft_cross_entropy() {
    let r = reference();
    let z = Tensor::from_vec(floats(&r["logits"]), (B, K), &Device::Cpu).unwrap();
    let soft = Tensor::from_vec(floats(&r["soft_targets"]), (B, K), &Device::Cpu).unwrap();
    let y = targets(&ints(&r["targets"]));
    let mut c = Criterion::new(CriterionConfig::new(LossKind::Maxsup, K, 5), &Device::Cpu).unwrap();
    c.set_epoch(4);
    let input = LossInput {
        soft_targets: Some(&soft),
        ..LossInput::new(&z, &y)
    };
    let got = c.loss(&input, true).unwrap().to_scalar::<f64>().unwrap();
    let expected = r["soft_ce"]["value"].as_f64().unwrap()
        + maxsup_penalty(&z, 0.2).unwrap().to_scalar::<f64>().unwrap();
    assert_close(got, expected, 1e-12, "soft ce + maxsup at alpha 0.2");
    let mut ols = Criterion::new(CriterionConfig::new(LossKind::Ols, K, 5), &Device::Cpu).unwrap();
    assert!(ols
        .loss(&input, true)
        .unwrap_err()
        .to_string()
        .contains("Mixup/CutMix"));
    let zipf = Criterion::new(CriterionConfig::new(LossKind::Zipf, K, 5), &Device::Cpu).unwrap();
    let msg = zipf
        .clone()
        .loss(&LossInput::new(&z, &y), true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dense logits"), "{msg}");
    let _ = Var::new(0f32, &Device::Cpu); // keep the import used in every configuration
}
