//! The streaming closed form must equal the pairwise Kornblith definition.

use maxsup_metrics::{ClassSeparation, SplitMix64};

/// Pairwise definition, straight from the formula: cosine distance between raw vectors,
/// self-pairs included, per-class-pair averages, then averaged over classes (pairs).
fn naive(features: &[f32], labels: &[u32], d: usize, k: usize) -> (f64, f64) {
    let rows: Vec<&[f32]> = features.chunks_exact(d).collect();
    let cos_dist = |a: &[f32], b: &[f32]| {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        1.0 - dot / (na * nb)
    };
    let members: Vec<Vec<usize>> = (0..k as u32)
        .map(|c| (0..labels.len()).filter(|&i| labels[i] == c).collect())
        .collect();
    let pair_mean = |a: &[usize], b: &[usize]| {
        let mut s = 0.0;
        for &i in a {
            for &j in b {
                s += cos_dist(rows[i], rows[j]);
            }
        }
        s / (a.len() * b.len()) as f64
    };
    let within = members.iter().map(|m| pair_mean(m, m)).sum::<f64>() / k as f64;
    let mut total = 0.0;
    for a in &members {
        for b in &members {
            total += pair_mean(a, b);
        }
    }
    (within, total / (k * k) as f64)
}

/// Clustered data: class centre (norm `sep`) plus unit-variance Gaussian noise; unequal class sizes.
#[allow(clippy::needless_range_loop)]
fn clustered(n: usize, d: usize, k: usize, sep: f64, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = SplitMix64::new(seed);
    let centres: Vec<Vec<f64>> = (0..k)
        .map(|_| {
            (0..d)
                .map(|_| r.next_normal() * sep / (d as f64).sqrt())
                .collect()
        })
        .collect();
    let labels: Vec<u32> = (0..n)
        .map(|i| if i % 3 == 0 { 0 } else { (i % k) as u32 })
        .collect();
    let mut f = Vec::with_capacity(n * d);
    for &y in &labels {
        for j in 0..d {
            f.push((centres[y as usize][j] + r.next_normal() * 0.3) as f32);
        }
    }
    (f, labels)
}

fn check(features: &[f32], labels: &[u32], d: usize, k: usize) {
    let (w, t) = naive(features, labels, d, k);
    let mut acc = ClassSeparation::new(d);
    // Uneven batches, to exercise the streaming path.
    let mut start = 0;
    for (b, size) in [7usize, 1, 50, 33].iter().cycle().enumerate() {
        if start >= labels.len() || b > 1000 {
            break;
        }
        let end = (start + size).min(labels.len());
        acc.push(&features[start * d..end * d], &labels[start..end])
            .unwrap();
        start = end;
    }
    let m = acc.finish().unwrap();
    assert_eq!(m.num_classes, k);
    assert!(
        (m.d_within - w).abs() < 1e-6,
        "d_within {} vs naive {w}",
        m.d_within
    );
    assert!(
        (m.d_total - t).abs() < 1e-6,
        "d_total {} vs naive {t}",
        m.d_total
    );
    assert!((m.r2 - (1.0 - w / t)).abs() < 1e-6);
}

#[test]
fn closed_form_matches_pairwise_on_random_data() {
    let (d, k) = (16, 4);
    let mut r = SplitMix64::new(1);
    let f: Vec<f32> = (0..300 * d).map(|_| r.next_normal() as f32).collect();
    let y: Vec<u32> = (0..300).map(|i| (i % k) as u32).collect();
    check(&f, &y, d, k);
}

#[test]
fn closed_form_matches_pairwise_on_clustered_data() {
    for (sep, seed) in [(1.0, 2), (4.0, 3)] {
        let (f, y) = clustered(400, 32, 5, sep, seed);
        check(&f, &y, 32, 5);
    }
}

#[test]
fn well_separated_clusters_have_high_r2_and_identical_classes_zero() {
    let (f, y) = clustered(400, 32, 5, 20.0, 4);
    let mut acc = ClassSeparation::new(32);
    acc.push(&f, &y).unwrap();
    let sep = acc.finish().unwrap();
    assert!(sep.r2 > 0.9, "{sep:?}");
    // Same distribution for every class: R^2 near 0.
    let (f, _) = clustered(2000, 32, 1, 0.0, 5);
    let y: Vec<u32> = (0..2000).map(|i| (i % 4) as u32).collect();
    let mut acc = ClassSeparation::new(32);
    acc.push(&f, &y).unwrap();
    let same = acc.finish().unwrap();
    assert!(same.r2.abs() < 0.01, "{same:?}");
}

#[test]
fn rejects_zero_vectors_and_bad_shapes() {
    let mut acc = ClassSeparation::new(2);
    assert!(acc
        .push(&[1.0, 0.0, 0.0, 0.0], &[0, 1])
        .unwrap_err()
        .to_string()
        .contains("sample 1"));
    assert!(acc.push(&[1.0, 0.0, 1.0], &[0, 1]).is_err());
    assert!(ClassSeparation::new(2).finish().is_err());
}
