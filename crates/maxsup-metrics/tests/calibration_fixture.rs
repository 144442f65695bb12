//! Calibration metrics against PyTorch/numpy definitions (fixtures/gen_fixtures.py).

mod fixture_util;
use fixture_util::*;
use maxsup_metrics::CalibrationAccumulator;

#[test]
fn matches_torch_reference_when_streamed_in_batches() {
    let fx = load("calibration.json");
    let k = fx["k"].as_u64().unwrap() as usize;
    let logits = f32s(&fx["logits"]);
    let labels = u32s(&fx["labels"]);
    let mut acc = CalibrationAccumulator::new(k).unwrap();
    for (rows, ys) in logits.chunks(37 * k).zip(labels.chunks(37)) {
        acc.push(rows, ys).unwrap();
    }
    let r = acc.report().unwrap();
    assert_eq!(r.samples, labels.len() as u64);
    close(r.top1, fx["top1"].as_f64().unwrap(), 1e-12, "top1");
    close(r.top5, fx["top5"].as_f64().unwrap(), 1e-12, "top5");
    close(r.nll, fx["nll"].as_f64().unwrap(), 1e-9, "nll");
    for (mine, reference) in r
        .reliability
        .iter()
        .zip(fx["reliability"].as_array().unwrap())
    {
        assert_eq!(
            mine.num_bins as u64,
            reference["num_bins"].as_u64().unwrap()
        );
        close(mine.ece, reference["ece"].as_f64().unwrap(), 1e-9, "ece");
        for (b, rb) in mine.bins.iter().zip(reference["bins"].as_array().unwrap()) {
            assert_eq!(b.count, rb["count"].as_u64().unwrap());
            close(
                b.accuracy,
                rb["accuracy"].as_f64().unwrap(),
                1e-12,
                "bin accuracy",
            );
            close(
                b.confidence,
                rb["confidence"].as_f64().unwrap(),
                1e-9,
                "bin confidence",
            );
        }
    }
    assert_eq!(r.ece(15), Some(r.reliability[1].ece));
    assert!(r.ece(10).unwrap() > 0.0);
}

#[test]
fn hand_computed_example() {
    // Two classes. Row 0: confident and right; row 1: tie -> first index (class 0) predicted, wrong.
    let mut acc = CalibrationAccumulator::with_bins(2, &[2]).unwrap();
    acc.push_i64(&[3.0, 0.0, 1.0, 1.0], &[0, 1]).unwrap();
    let r = acc.report().unwrap();
    let p = 1.0 / (1.0 + (-3.0f64).exp());
    assert_eq!(r.top1, 0.5);
    assert_eq!(r.top5, 1.0); // K <= 5: every label is in the top 5
    close(r.nll, (-(p.ln()) + 2f64.ln()) / 2.0, 1e-12, "nll");
    // Confidence 0.5 lands in (0, 0.5]; p in (0.5, 1].
    let bins = &r.reliability[0].bins;
    assert_eq!((bins[0].count, bins[1].count), (1, 1));
    close(
        r.reliability[0].ece,
        0.5 * 0.5 + 0.5 * (1.0 - p),
        1e-12,
        "ece",
    );
}

#[test]
fn rejects_bad_input() {
    let mut acc = CalibrationAccumulator::new(3).unwrap();
    assert!(acc.push(&[0.0; 5], &[0, 1]).is_err());
    assert!(acc
        .push(&[0.0, 1.0, 2.0], &[3])
        .unwrap_err()
        .to_string()
        .contains("row 0"));
    assert!(acc.push(&[0.0, f32::NAN, 2.0], &[1]).is_err());
    assert!(acc.push_i64(&[0.0, 1.0, 2.0], &[-1]).is_err());
    assert!(acc.report().is_err());
}
