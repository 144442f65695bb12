//! The summary of timed kernel launches (`kernel_times` on CUDA): per name, how many and how
//! long. Kept apart from the CUDA events so that the summing is tested on every build.

/// One kernel's share of the timed launches: how many and their summed GPU time.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub name: String,
    pub launches: usize,
    pub ms: f64,
}

/// `(name, ms)` per launch, summed by name, longest first (ties by name).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn summarize(launches: impl IntoIterator<Item = (String, f64)>) -> Vec<KernelTime> {
    let mut by_name: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for (name, ms) in launches {
        let entry = by_name.entry(name).or_default();
        entry.0 += 1;
        entry.1 += ms;
    }
    let mut rows: Vec<KernelTime> = by_name
        .into_iter()
        .map(|(name, (launches, ms))| KernelTime { name, launches, ms })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_are_summed_by_name_longest_first() {
        let rows = summarize([
            ("bn_apply_bf16".to_string(), 0.5),
            ("cudnn conv forward".to_string(), 2.0),
            ("bn_apply_bf16".to_string(), 0.25),
            ("relu_fwd_bf16".to_string(), 0.75),
        ]);
        let want = [
            ("cudnn conv forward", 1, 2.0),
            ("bn_apply_bf16", 2, 0.75),
            ("relu_fwd_bf16", 1, 0.75),
        ];
        assert_eq!(rows.len(), want.len());
        for (got, (name, launches, ms)) in rows.iter().zip(want) {
            assert_eq!(
                (got.name.as_str(), got.launches, got.ms),
                (name, launches, ms)
            );
        }
        assert!(summarize([]).is_empty());
    }
}
