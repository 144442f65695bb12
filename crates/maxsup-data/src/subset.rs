//! The first N samples of a dataset, as a dataset: every method forwarded, so that encoded
//! samples keep reaching the crop-only JPEG decoder (`load_raw`).

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::dataset::{Dataset, RawSample};
use crate::image::RgbImage;

/// Samples `0..len` of `inner`.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    len: usize,
}

impl Subset {
    /// The first `n` samples of `dataset`; asking for more than it has is an error (never a
    /// silently smaller subset).
    pub fn first(dataset: Arc<dyn Dataset>, n: usize) -> Result<Self> {
        if n > dataset.len() {
            bail!(
                "a subset of {n} samples was asked for, but the split has {}",
                dataset.len()
            );
        }
        Ok(Self {
            inner: dataset,
            len: n,
        })
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.len
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(index)
    }
    fn name(&self, index: usize) -> String {
        self.inner.name(index)
    }
    fn load(&self, index: usize) -> Result<RgbImage> {
        self.inner.load(index)
    }
    fn load_raw(&self, index: usize) -> Result<RawSample> {
        self.inner.load_raw(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores its samples encoded; decoding them through `load` is a bug for this test.
    struct Encoded;

    impl Dataset for Encoded {
        fn len(&self) -> usize {
            4
        }
        fn num_classes(&self) -> usize {
            2
        }
        fn label(&self, index: usize) -> u32 {
            index as u32 % 2
        }
        fn name(&self, index: usize) -> String {
            format!("enc/{index}")
        }
        fn load(&self, _: usize) -> Result<RgbImage> {
            bail!("load() called: the raw (encoded) path was skipped")
        }
        fn load_raw(&self, index: usize) -> Result<RawSample> {
            Ok(RawSample::Encoded(vec![index as u8]))
        }
    }

    #[test]
    fn forwards_every_method_and_refuses_more_than_there_is() {
        let sub = Subset::first(Arc::new(Encoded), 2).unwrap();
        assert_eq!((sub.len(), sub.num_classes(), sub.label(1)), (2, 2, 1));
        assert_eq!(sub.name(1), "enc/1");
        assert_eq!(sub.load_raw(1).unwrap(), RawSample::Encoded(vec![1]));
        assert!(sub
            .load(0)
            .unwrap_err()
            .to_string()
            .contains("load() called"));
        let e = Subset::first(Arc::new(Encoded), 5)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("subset of 5 samples") && e.contains("has 4"),
            "{e}"
        );
        assert_eq!(Subset::first(Arc::new(Encoded), 4).unwrap().len(), 4);
    }
}
