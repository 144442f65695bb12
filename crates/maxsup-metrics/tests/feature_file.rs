//! Feature files: streamed writes read back exactly, through both our reader and the safetensors crate.

use maxsup_metrics::{
    labels_to_classes, write_feature_file, FeatureBatch, FeatureFile, FeatureFileWriter,
};

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("maxsup-metrics-{}-{name}", std::process::id()))
}

#[test]
fn batched_writes_round_trip() {
    let (n, d, k) = (11, 3, 4);
    let features: Vec<f32> = (0..n * d).map(|i| i as f32 * 0.5 - 3.0).collect();
    let logits: Vec<f32> = (0..n * k).map(|i| -(i as f32) / 7.0).collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % k as i64).collect();
    let path = tmp("rt.safetensors");
    let mut w = FeatureFileWriter::create(&path, n, d, k).unwrap();
    for s in [0..4, 4..5, 5..11] {
        w.push(
            &features[s.start * d..s.end * d],
            &logits[s.start * k..s.end * k],
            &labels[s.clone()],
        )
        .unwrap();
    }
    w.finish().unwrap();

    let file = FeatureFile::open(&path).unwrap();
    assert_eq!(
        (file.len(), file.feature_dim(), file.num_logits()),
        (n, d, k)
    );
    let all = file.read_all().unwrap();
    assert_eq!(
        all,
        FeatureBatch {
            features: features.clone(),
            logits: logits.clone(),
            labels: labels.clone()
        }
    );
    let pieces: Vec<FeatureBatch> = file.batches(4).collect::<Result<_, _>>().unwrap();
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces[2].labels, labels[8..]);
    assert_eq!(pieces[1].features, features[4 * d..8 * d]);

    // The generic safetensors reader sees the same tensors.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("features").unwrap().shape(), &[n, d]);
    assert_eq!(
        st.tensor("labels").unwrap().dtype(),
        safetensors::Dtype::I64
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn writer_and_reader_report_errors() {
    let path = tmp("err.safetensors");
    let mut w = FeatureFileWriter::create(&path, 2, 2, 2).unwrap();
    assert!(w.push(&[0.0; 3], &[0.0; 2], &[0]).is_err());
    w.push(&[0.0; 2], &[0.0; 2], &[0]).unwrap();
    assert!(w.push(&[0.0; 4], &[0.0; 4], &[0, 1]).is_err());
    assert!(w
        .finish()
        .unwrap_err()
        .to_string()
        .contains("1 samples written but 2 declared"));

    // A safetensors file with features only: labels are required (logits are optional, see
    // `files_without_logits_hold_features_and_labels`).
    let data = [0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 2], &data).unwrap();
    safetensors::serialize_to_file([("features", view)], None, &path).unwrap();
    let err = FeatureFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("no tensor `labels`"), "{err}");
    std::fs::remove_file(&path).unwrap();
    assert!(FeatureFile::open(&path).is_err());

    write_feature_file(
        &path,
        1,
        1,
        &FeatureBatch {
            features: vec![1.0],
            logits: vec![2.0],
            labels: vec![-3],
        },
    )
    .unwrap();
    let f = FeatureFile::open(&path).unwrap();
    assert!(labels_to_classes(&f.read_all().unwrap().labels)
        .unwrap_err()
        .to_string()
        .contains("row 0"));
    assert!(f.read_rows(0, 2).is_err());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn files_without_logits_hold_features_and_labels() {
    let path = tmp("nologits.safetensors");
    let mut w = FeatureFileWriter::create(&path, 3, 2, 0).unwrap();
    w.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[], &[0, 1, 0])
        .unwrap();
    w.finish().unwrap();
    // The safetensors crate sees two tensors; our reader accepts the file.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor("logits").is_err());
    let file = FeatureFile::open(&path).unwrap();
    assert_eq!(
        (file.len(), file.feature_dim(), file.num_logits()),
        (3, 2, 0)
    );
    assert_eq!(file.read_all().unwrap().labels, [0, 1, 0]);
    let e = file.require_logits("calibration").unwrap_err().to_string();
    assert!(
        e.contains("has no logits") && e.contains("calibration needs them"),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn non_finite_values_and_empty_files_are_errors() {
    // The writer refuses a non-finite row, and the half-written file does not appear.
    let path = tmp("nan.safetensors");
    let mut w = FeatureFileWriter::create(&path, 2, 2, 2).unwrap();
    let e = w
        .push(&[1.0, 2.0, 3.0, f32::NAN], &[0.0, 1.0, 1.0, 0.0], &[0, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1 has a non-finite feature (NaN)"), "{e}");
    drop(w);
    assert!(!path.exists());
    let mut partial = path.clone().into_os_string();
    partial.push(".partial");
    assert!(!std::path::Path::new(&partial).exists());
    // A file written elsewhere (e.g. by PyTorch) with a NaN is refused when read.
    let features: Vec<u8> = [1.0f32, 2.0, 3.0, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let labels: Vec<u8> = [0i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "features",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &features)
                .unwrap(),
        ),
        (
            "labels",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &labels)
                .unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let e = FeatureFile::open(&path)
        .unwrap()
        .read_all()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("features of row 1 hold a non-finite value (NaN)"),
        "{e}"
    );
    let empty = tmp("empty.safetensors");
    FeatureFileWriter::create(&empty, 0, 2, 2)
        .unwrap()
        .finish()
        .unwrap();
    let e = FeatureFile::open(&empty).err().unwrap().to_string();
    assert!(e.contains("has no samples"), "{e}");
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&empty).unwrap();
}
