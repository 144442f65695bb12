//! Feature extraction writes logits only when they score the labels.

use std::sync::Arc;

use candle_core::Device;
use maxsup_analysis::extract_features;
use maxsup_data::{Dataset, Interpolation, Loader, LoaderConfig, Pipeline, RgbImage};
use maxsup_metrics::FeatureFile;
use maxsup_models::{create_model, ModelOptions};

/// `n` gray-ish 40x40 images in `k` classes.
struct Tiny {
    n: usize,
    k: usize,
}

impl Dataset for Tiny {
    fn len(&self) -> usize {
        self.n
    }
    fn num_classes(&self) -> usize {
        self.k
    }
    fn label(&self, index: usize) -> u32 {
        (index % self.k) as u32
    }
    fn name(&self, index: usize) -> String {
        format!("tiny/{index}")
    }
    fn load(&self, index: usize) -> anyhow::Result<RgbImage> {
        RgbImage::new(
            40,
            40,
            (0..40 * 40 * 3)
                .map(|p| ((p + index * 31) % 256) as u8)
                .collect(),
        )
    }
}

fn extract(data_classes: usize) -> FeatureFile {
    let model = create_model(
        "resnet20_cifar",
        &ModelOptions {
            num_classes: Some(10),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let loader = Loader::new(
        Arc::new(Tiny {
            n: 6,
            k: data_classes,
        }),
        Pipeline::imagenet_eval(32, 0.875, Interpolation::Bilinear),
        LoaderConfig::eval(4),
    )
    .unwrap();
    let out = std::env::temp_dir().join(format!(
        "maxsup-extract-{data_classes}-{}.safetensors",
        std::process::id()
    ));
    assert_eq!(
        extract_features(
            model.as_ref(),
            &loader,
            &Device::Cpu,
            &out,
            None,
            &mut |_, _| {}
        )
        .unwrap(),
        6
    );
    let file = FeatureFile::open(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    file
}

#[test]
fn logits_only_next_to_labels_of_the_models_classes() {
    let same = extract(10);
    assert_eq!(
        (same.len(), same.feature_dim(), same.num_logits()),
        (6, 64, 10)
    );
    let transfer = extract(3);
    assert_eq!(
        (
            transfer.len(),
            transfer.feature_dim(),
            transfer.num_logits()
        ),
        (6, 64, 0)
    );
    assert_eq!(transfer.read_all().unwrap().labels, [0, 1, 2, 0, 1, 2]);
}
