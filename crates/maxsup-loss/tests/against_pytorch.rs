//! Every stateless loss against PyTorch (fixtures/gen_fixtures.py), value and gradient, for
//! f64 (tight) and f32 logits, on a batch with correctly and wrongly classified samples.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use maxsup_loss::*;

type LossFn = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

fn check(key: &str, f: LossFn) {
    let r = reference();
    let (b, k) = (
        r["batch"].as_u64().unwrap() as usize,
        r["classes"].as_u64().unwrap() as usize,
    );
    let logits = floats(&r["logits"]);
    let y = targets(&ints(&r["targets"]));
    let expected_value = r[key]["value"].as_f64().unwrap();
    let expected_grad = floats(&r[key]["grad"]);
    for (dtype, rel) in [(DType::F64, 1e-10), (DType::F32, 2e-5)] {
        let z = var(&logits, (b, k), dtype);
        let (value, grad) = value_and_grad(&z, f(z.as_tensor(), &y));
        assert_close(
            value,
            expected_value,
            rel,
            &format!("{key} value {dtype:?}"),
        );
        assert_all_close(&grad, &expected_grad, rel, &format!("{key} grad {dtype:?}"));
    }
}

#[test]
fn cross_entropy_matches_pytorch() {
    check("ce", cross_entropy);
}

#[test]
fn maxsup_matches_pytorch() {
    check("maxsup_0.1", |z, y| maxsup(z, y, 0.1));
    check("maxsup_0.17", |z, y| maxsup(z, y, 0.17));
    check("maxsup_penalty_0.2", |z, _| maxsup_penalty(z, 0.2));
}

#[test]
fn label_smoothing_matches_pytorch() {
    check("ls_0.1", |z, y| label_smoothing(z, y, 0.1));
    check("ls_0.2", |z, y| label_smoothing(z, y, 0.2));
}

#[test]
fn soft_target_cross_entropy_matches_pytorch() {
    let r = reference();
    let soft = Tensor::from_vec(floats(&r["soft_targets"]), (6, 5), &Device::Cpu).unwrap();
    let soft32 = soft.to_dtype(DType::F32).unwrap();
    let z = var(&floats(&r["logits"]), (6, 5), DType::F64);
    let (value, grad) = value_and_grad(&z, soft_target_cross_entropy(z.as_tensor(), &soft));
    assert_close(
        value,
        r["soft_ce"]["value"].as_f64().unwrap(),
        1e-10,
        "soft ce",
    );
    assert_all_close(&grad, &floats(&r["soft_ce"]["grad"]), 1e-10, "soft ce grad");
    let z = var(&floats(&r["logits"]), (6, 5), DType::F32);
    let (value, _) = value_and_grad(&z, soft_target_cross_entropy(z.as_tensor(), &soft32));
    assert_close(
        value,
        r["soft_ce"]["value"].as_f64().unwrap(),
        2e-5,
        "soft ce f32",
    );
}

#[test]
fn logit_penalty_matches_pytorch() {
    check("lp_0.002", |z, y| logit_penalty(z, y, 2e-3));
}

#[test]
fn focal_matches_pytorch() {
    check("focal_2", |z, y| focal(z, y, 2.0));
    check("focal_0", |z, y| focal(z, y, 0.0));
}

#[test]
fn ls_decomposition_matches_reference_and_sums_to_the_ls_term() {
    let r = reference();
    let z = Tensor::from_vec(floats(&r["logits"]), (6, 5), &Device::Cpu).unwrap();
    let y = targets(&ints(&r["targets"]));
    let parts = ls_decomposition(&z, &y, 0.1).unwrap();
    let reg = parts.regularization.to_scalar::<f64>().unwrap();
    let err = parts.error_amplification.to_scalar::<f64>().unwrap();
    assert_close(
        reg,
        r["ls_decomposition_0.1"]["regularization"]
            .as_f64()
            .unwrap(),
        1e-12,
        "reg",
    );
    assert_close(
        err,
        r["ls_decomposition_0.1"]["error_amplification"]
            .as_f64()
            .unwrap(),
        1e-12,
        "err",
    );
    assert!(reg >= 0.0 && err <= 0.0);
    // LS = CE + regularization + error amplification (paper Lemma 3.2 / Corollary 3.4).
    let ls = label_smoothing(&z, &y, 0.1)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let ce = cross_entropy(&z, &y).unwrap().to_scalar::<f64>().unwrap();
    assert_close(ls, ce + reg + err, 1e-12, "LS = CE + reg + err");
}
