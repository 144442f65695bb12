//! Stratified train/validation split used to choose the probe's regularisation.

use maxsup_rng::SplitMix64;

/// Splits sample indices per class: for each class in increasing order, its indices (in input
/// order) are shuffled with one shared SplitMix64 stream seeded by `seed`, and the first
/// `round(val_fraction · n_c)` go to validation. Both lists are returned sorted.
/// The procedure is simple on purpose: `bench/probe_vs_sklearn.py` reproduces it exactly.
pub fn stratified_split(labels: &[u32], val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &y) in labels.iter().enumerate() {
        members[y as usize].push(i);
    }
    let mut rng = SplitMix64::new(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut m in members {
        rng.shuffle(&mut m);
        let n_val = (val_fraction * m.len() as f64 + 0.5).floor() as usize;
        val.extend_from_slice(&m[..n_val.min(m.len())]);
        train.extend_from_slice(&m[n_val.min(m.len())..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_disjoint_and_complete() {
        let labels: Vec<u32> = (0..103).map(|i| (i % 4) as u32).collect();
        let (t, v) = stratified_split(&labels, 0.2, 0);
        assert_eq!(t.len() + v.len(), 103);
        for c in 0..4 {
            let nc = labels.iter().filter(|&&y| y == c).count();
            let vc = v.iter().filter(|&&i| labels[i] == c).count();
            assert_eq!(vc, (0.2 * nc as f64 + 0.5).floor() as usize);
        }
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_ne!(stratified_split(&labels, 0.2, 1).1, v);
    }
}
