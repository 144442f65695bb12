//! Closed forms and properties from the paper: Eq. 9 gradient, sign of the penalty, equality
//! with the LS term on correct predictions, ties, half precision and the alpha schedule.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use maxsup_loss::*;

fn random_logits(b: usize, k: usize, seed: u64) -> Vec<f64> {
    // A small deterministic generator so the tests need no RNG crate.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..b * k)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 8.0 - 4.0
        })
        .collect()
}

#[test]
fn maxsup_penalty_gradient_is_paper_eq_9() {
    let (b, k, alpha) = (4, 7, 0.15);
    let values = random_logits(b, k, 3);
    let z = var(&values, (b, k), DType::F64);
    let (_, grad) = value_and_grad(&z, maxsup_penalty(z.as_tensor(), alpha));
    for i in 0..b {
        let row = &values[i * k..(i + 1) * k];
        let top = (0..k).fold(0, |best, j| if row[j] > row[best] { j } else { best });
        for j in 0..k {
            let expected = if j == top {
                alpha * (1.0 - 1.0 / k as f64)
            } else {
                -alpha / k as f64
            } / b as f64;
            assert_close(grad[i * k + j], expected, 1e-12, &format!("grad[{i},{j}]"));
        }
    }
}

#[test]
fn maxsup_term_is_nonnegative_and_equals_ls_term_when_all_correct() {
    let (b, k) = (16, 10);
    let values = random_logits(b, k, 11);
    let z = Tensor::from_vec(values.clone(), (b, k), &Device::Cpu).unwrap();
    let penalty = maxsup_penalty(&z, 0.1).unwrap().to_scalar::<f64>().unwrap();
    assert!(penalty >= 0.0);
    // Label every sample with its own argmax: all predictions are correct.
    let argmax: Vec<u32> = z.argmax(1).unwrap().to_vec1().unwrap();
    let y = targets(&argmax);
    let ce = cross_entropy(&z, &y).unwrap().to_scalar::<f64>().unwrap();
    let ms = maxsup(&z, &y, 0.1).unwrap().to_scalar::<f64>().unwrap();
    let parts = ls_decomposition(&z, &y, 0.1).unwrap();
    let ls_term = parts.regularization.to_scalar::<f64>().unwrap()
        + parts.error_amplification.to_scalar::<f64>().unwrap();
    assert_eq!(parts.error_amplification.to_scalar::<f64>().unwrap(), 0.0);
    assert_close(
        ms - ce,
        ls_term,
        1e-12,
        "MaxSup term = LS term when correct",
    );
    assert_close(ms - ce, penalty, 1e-12, "maxsup - ce = maxsup_penalty");
}

#[test]
fn ties_send_the_gradient_to_the_first_maximum() {
    let z = Var::new(&[[1.0f64, 3.0, 3.0, 0.0]], &Device::Cpu).unwrap();
    let (value, grad) = value_and_grad(&z, maxsup_penalty(z.as_tensor(), 0.4));
    assert_close(value, 0.4 * (3.0 - 7.0 / 4.0), 1e-12, "value");
    assert_all_close(&grad, &[-0.1, 0.4 - 0.1, -0.1, -0.1], 1e-12, "grad");
}

#[test]
fn half_precision_logits_are_computed_in_f32() {
    let r = reference();
    let y = targets(&ints(&r["targets"]));
    let expected = r["maxsup_0.1"]["value"].as_f64().unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let z = var(&floats(&r["logits"]), (6, 5), dtype);
        let (value, grad) = value_and_grad(&z, maxsup(z.as_tensor(), &y, 0.1));
        // The only error left is the rounding of the logits themselves to half precision.
        assert_close(value, expected, 2e-2, &format!("{dtype:?} value"));
        assert_all_close(
            &grad,
            &floats(&r["maxsup_0.1"]["grad"]),
            2e-2,
            &format!("{dtype:?} grad"),
        );
    }
}

#[test]
fn i64_targets_are_accepted() {
    let z = Tensor::new(&[[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]], &Device::Cpu).unwrap();
    let a = cross_entropy(&z, &Tensor::new(&[0u32, 2], &Device::Cpu).unwrap()).unwrap();
    let b = cross_entropy(&z, &Tensor::new(&[0i64, 2], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(a.to_scalar::<f32>().unwrap(), b.to_scalar::<f32>().unwrap());
}

#[test]
fn alpha_schedule_reaches_the_end_value_at_the_last_epoch() {
    let s = AlphaSchedule::linear(0.1, 0.2, 300);
    assert_eq!(s.at(0), 0.1);
    assert_close(s.at(299), 0.2, 1e-15, "last epoch");
    assert_close(
        s.at(150),
        0.1 + 0.1 * 150.0 / 299.0,
        1e-15,
        "middle (official DeiT /299)",
    );
    assert_close(s.at(1000), 0.2, 1e-15, "past the end");
    assert_eq!(AlphaSchedule::linear(0.1, 0.2, 1).at(0), 0.1);
    assert_eq!(AlphaSchedule::constant(0.1).at(42), 0.1);
}
