//! Logit statistics against the official analysis definitions computed with PyTorch/numpy.

mod fixture_util;
use fixture_util::*;
use maxsup_metrics::{analyze_logits, Histogram};

#[test]
fn near_zero_share_top1_and_histogram_match_reference() {
    let fx = load("logit_stats.json");
    let k = fx["k"].as_u64().unwrap() as usize;
    let logits = f32s(&fx["logits"]);
    let s = analyze_logits(&logits, k, fx["threshold"].as_f64().unwrap() as f32).unwrap();
    for (a, b) in s.near_zero_share.iter().zip(f64s(&fx["near_zero_share"])) {
        close(*a, b, 1e-7, "near-zero share");
    }
    assert!(
        s.near_zero_share.iter().any(|&v| v > 0.5),
        "fixture should contain near-zero rows"
    );
    for (a, b) in s.top1_probability.iter().zip(f64s(&fx["top1_probability"])) {
        close(*a, b, 1e-12, "top-1 probability");
    }
    let mut h = Histogram::new(-4.0, 4.0, 16).unwrap();
    h.extend(logits.iter().map(|&z| f64::from(z)));
    let expected: Vec<u64> = fx["hist_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(h.counts, expected);
    assert_eq!(h.below, fx["hist_below"].as_u64().unwrap());
    assert_eq!(h.above, fx["hist_above"].as_u64().unwrap());
    assert_eq!(h.total(), logits.len() as u64);
    close(
        h.density().iter().sum::<f64>() * h.bin_width(),
        1.0,
        1e-12,
        "density integrates to 1 over the range (numpy's density=True)",
    );
}

#[test]
fn histogram_edges_and_bad_ranges() {
    let mut h = Histogram::new(0.0, 1.0, 4).unwrap();
    h.extend([0.0, 0.25, 0.5, 0.99, 1.0, 1.5, -0.1, f64::NAN]);
    assert_eq!(h.counts, vec![1, 1, 1, 2]);
    assert_eq!((h.below, h.above), (2, 1));
    assert_eq!(h.edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert!(Histogram::new(1.0, 1.0, 3).is_err());
    assert!(Histogram::new(0.0, 1.0, 0).is_err());
    assert!(analyze_logits(&[0.0; 5], 2, 0.01).is_err());
}
