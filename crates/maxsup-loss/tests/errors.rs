//! Bad input is an error that says what is wrong, never a panic or a silent NaN.

use candle_core::{Device, Tensor};
use maxsup_loss::*;

fn err_text(r: candle_core::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got {t}"),
        Err(e) => e.to_string(),
    }
}

fn logits() -> Tensor {
    Tensor::new(&[[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]], &Device::Cpu).unwrap()
}

#[test]
fn target_out_of_range() {
    let y = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
    let msg = err_text(maxsup(&logits(), &y, 0.1));
    assert!(
        msg.contains("target 3 at batch position 1 is out of range for 3 classes"),
        "{msg}"
    );
    let y = Tensor::new(&[-1i64, 0], &Device::Cpu).unwrap();
    assert!(err_text(cross_entropy(&logits(), &y)).contains("target -1"));
}

#[test]
fn shape_mismatch() {
    let y = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
    assert!(err_text(label_smoothing(&logits(), &y, 0.1)).contains("targets must have shape [2]"));
    let flat = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
    assert!(err_text(maxsup_penalty(&flat, 0.1)).contains("[batch, classes]"));
    let soft = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(
        err_text(soft_target_cross_entropy(&logits(), &soft)).contains("soft targets must have")
    );
}

#[test]
fn empty_batch_and_single_class() {
    let empty = Tensor::zeros((0, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::zeros(0, candle_core::DType::U32, &Device::Cpu).unwrap();
    assert!(err_text(cross_entropy(&empty, &y)).contains("empty batch"));
    let one = Tensor::zeros((2, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 0], &Device::Cpu).unwrap();
    assert!(err_text(maxsup(&one, &y, 0.1)).contains("at least 2 classes"));
}

#[test]
fn non_finite_logits_are_reported_with_their_samples() {
    let z = Tensor::new(
        &[
            [2.0f32, 0.5, -1.0],
            [0.1, f32::NAN, 3.0],
            [0.0, f32::INFINITY, 1.0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
    let msg = err_text(maxsup(&z, &y, 0.1));
    assert!(
        msg.contains("non-finite logits in 2 of 3 samples (batch positions 1, 2)"),
        "{msg}"
    );
}

#[test]
fn bad_hyper_parameters_and_dtypes() {
    let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    assert!(err_text(label_smoothing(&logits(), &y, 1.5)).contains("alpha must be in [0, 1]"));
    assert!(err_text(maxsup(&logits(), &y, f64::NAN)).contains("alpha must be finite"));
    assert!(err_text(focal(&logits(), &y, -1.0)).contains("gamma must be >= 0"));
    let y_float = Tensor::new(&[0f32, 2.0], &Device::Cpu).unwrap();
    assert!(err_text(cross_entropy(&logits(), &y_float)).contains("class indices"));
    let int_logits = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
    assert!(err_text(cross_entropy(
        &int_logits,
        &Tensor::new(&[0u32], &Device::Cpu).unwrap()
    ))
    .contains("float tensor"));
}

#[test]
fn unknown_loss_name() {
    let err = "smooth".parse::<LossKind>().unwrap_err();
    assert!(
        err.contains("unknown loss `smooth`") && err.contains("maxsup"),
        "{err}"
    );
}
