//! The paper's tables from feature files: rows in the paper's order for the methods present,
//! the paper's values beside ours, and the claim verdicts computed from the measured numbers.

use maxsup_analysis::tables::{table1, table2};
use maxsup_metrics::{write_feature_file, FeatureBatch};
use std::path::Path;

/// Two classes in 2-D, each a cloud of radius `spread` around (±1, 0); logits favour the label.
fn features(spread: f32, n: usize) -> FeatureBatch {
    let mut b = FeatureBatch {
        features: vec![],
        logits: vec![],
        labels: vec![],
    };
    for i in 0..n {
        let class = (i % 2) as i64;
        let angle = i as f32 * 0.7;
        let centre = if class == 0 { -1.0 } else { 1.0 };
        b.features
            .extend([centre + spread * angle.cos(), spread * angle.sin()]);
        b.logits
            .extend(if class == 0 { [2.0, 0.0] } else { [0.0, 2.0] });
        b.labels.push(class);
    }
    b
}

fn write_run(root: &Path, method: &str, spread: f32) {
    let dir = root.join(method);
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "features_train",
        "features_val",
        "transfer_train",
        "transfer_test",
    ] {
        let path = dir.join(format!("{name}.safetensors"));
        write_feature_file(&path, 2, 2, &features(spread, 40)).unwrap();
    }
}

#[test]
fn tables_follow_the_paper_order_and_judge_the_claims_on_measured_values() {
    let root = tempfile::tempdir().unwrap();
    // LS tighter than the baseline, MaxSup looser than LS: both claims hold.
    write_run(root.path(), "maxsup", 0.3);
    write_run(root.path(), "ce", 0.4);
    write_run(root.path(), "ls", 0.1);
    let t1 = table1(root.path()).unwrap();
    let labels: Vec<_> = t1.rows.iter().map(|r| r.label).collect();
    assert_eq!(labels, ["Baseline", "Label Smoothing", "MaxSup"]);
    assert!(t1.rows.iter().all(|r| r.top1 == 1.0));
    let md = t1.to_markdown();
    assert!(md.contains("| Baseline | 100.00% |"), "{md}");
    assert!(md.contains("(0.3114)"), "{md}");
    assert_eq!(md.matches("holds").count(), 4, "{md}");
    assert!(!md.contains("does NOT hold"), "{md}");

    // The other way round: the verdicts follow the numbers.
    write_run(root.path(), "ls", 0.5);
    let md = table1(root.path()).unwrap().to_markdown();
    assert_eq!(md.matches("does NOT hold").count(), 4, "{md}");

    let t2 = table2(root.path()).unwrap();
    assert_eq!(t2.rows.len(), 3);
    assert!(t2.rows.iter().all(|r| r.test_accuracy == 1.0));
    let md = t2.to_markdown();
    assert!(
        md.contains("| MaxSup | 100.00% |") && md.contains("81.0%"),
        "{md}"
    );
}

#[test]
fn a_directory_without_runs_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let e = table1(root.path()).unwrap_err().to_string();
    assert!(e.contains("features_train/val.safetensors"), "{e}");
    let e = table2(root.path()).unwrap_err().to_string();
    assert!(e.contains("transfer_train/test.safetensors"), "{e}");
}
