//! Converting class indices between the zip-cache label order (the map file's, not sorted) and
//! another order keyed by wnid, usually torchvision ImageFolder's sorted-wnid order. A DeiT checkpoint
//! trained with `--cache` predicts zip indices; ImageFolder/FFCV-trained models predict sorted ones.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

use crate::map_file::wnid_of;

/// A bijection between zip-order and target-order class indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassIndexConverter {
    /// wnid of each zip index.
    zip_wnids: Vec<String>,
    zip_to_target: Vec<u32>,
    target_to_zip: Vec<u32>,
}

/// wnid -> label from map-file text, as the official converter reads it: whitespace-split lines with
/// exactly two fields, key = the path's first component starting with `n`, first occurrence wins.
pub fn wnid_labels_from_map_text(
    text: &str,
    origin: &Path,
) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() != 2 {
            continue;
        }
        let Some(wnid) = wnid_of(parts[0]) else {
            continue;
        };
        let label: u32 = parts[1].parse().with_context(|| {
            format!(
                "{}:{}: label {:?} is not a non-negative integer",
                origin.display(),
                i + 1,
                parts[1]
            )
        })?;
        map.entry(wnid.to_string()).or_insert(label);
    }
    if map.is_empty() {
        bail!(
            "{}: no `<path-with-wnid> <label>` lines found",
            origin.display()
        );
    }
    Ok(map)
}

fn invert(map: &BTreeMap<String, u32>, what: &str) -> anyhow::Result<Vec<String>> {
    let mut by_index = vec![None; map.len()];
    for (wnid, &i) in map {
        let slot = by_index
            .get_mut(i as usize)
            .with_context(|| format!("{what}: index {i} of {wnid} is not in 0..{}", map.len()))?;
        if let Some(other) = slot.replace(wnid.clone()) {
            bail!("{what}: index {i} is used by both {other} and {wnid}");
        }
    }
    Ok(by_index
        .into_iter()
        .map(|w| w.expect("a bijection fills every slot"))
        .collect())
}

impl ClassIndexConverter {
    /// From two wnid -> index tables with identical wnid sets, each a bijection onto `0..K`.
    pub fn new(
        zip: &BTreeMap<String, u32>,
        target: &BTreeMap<String, u32>,
    ) -> anyhow::Result<ClassIndexConverter> {
        if zip.keys().ne(target.keys()) {
            let only_zip: Vec<_> = zip
                .keys()
                .filter(|k| !target.contains_key(*k))
                .take(5)
                .collect();
            let only_target: Vec<_> = target
                .keys()
                .filter(|k| !zip.contains_key(*k))
                .take(5)
                .collect();
            bail!(
                "class sets differ: only in zip map {only_zip:?}, only in target {only_target:?}"
            );
        }
        let zip_wnids = invert(zip, "zip map")?;
        invert(target, "target classes")?;
        let zip_to_target: Vec<u32> = zip_wnids.iter().map(|w| target[w]).collect();
        let mut target_to_zip = vec![0u32; zip_to_target.len()];
        for (z, &t) in zip_to_target.iter().enumerate() {
            target_to_zip[t as usize] = z as u32;
        }
        Ok(ClassIndexConverter {
            zip_wnids,
            zip_to_target,
            target_to_zip,
        })
    }

    /// Zip order from a map file against sorted-wnid (ImageFolder) order.
    pub fn from_map_file_to_sorted(map: &Path) -> anyhow::Result<ClassIndexConverter> {
        let text = std::fs::read_to_string(map)
            .with_context(|| format!("cannot read map file {}", map.display()))?;
        let zip = wnid_labels_from_map_text(&text, map)?;
        let sorted: BTreeMap<String, u32> = zip
            .keys()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        ClassIndexConverter::new(&zip, &sorted)
    }

    pub fn num_classes(&self) -> usize {
        self.zip_wnids.len()
    }

    /// wnids in zip-index order.
    pub fn zip_wnids(&self) -> &[String] {
        &self.zip_wnids
    }

    /// Zip index -> target index (e.g. a `--cache` DeiT prediction to ImageFolder's index).
    pub fn zip_to_target(&self, zip_index: u32) -> anyhow::Result<u32> {
        self.zip_to_target
            .get(zip_index as usize)
            .copied()
            .with_context(|| {
                format!(
                    "zip class index {zip_index} out of range 0..{}",
                    self.num_classes()
                )
            })
    }

    /// Target index -> zip index.
    pub fn target_to_zip(&self, target_index: u32) -> anyhow::Result<u32> {
        self.target_to_zip
            .get(target_index as usize)
            .copied()
            .with_context(|| {
                format!(
                    "target class index {target_index} out of range 0..{}",
                    self.num_classes()
                )
            })
    }

    /// Reorders one row of zip-order logits/probabilities into target order.
    pub fn permute_zip_row_to_target(&self, row: &[f32]) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(
            row.len() == self.num_classes(),
            "row has {} values, expected {}",
            row.len(),
            self.num_classes()
        );
        let mut out = vec![0f32; row.len()];
        for (z, &t) in self.zip_to_target.iter().enumerate() {
            out[t as usize] = row[z];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_val_map_order_converts_to_sorted() {
        let text = "val/n03146219/ILSVRC2012_val_00027260.JPEG\t0\nval/n03146219/b.JPEG\t0\n\
                    val/n01751748/c.JPEG\t1\nImageNet/train/n01871265/d.JPEG\t2\n";
        let zip = wnid_labels_from_map_text(text, Path::new("val_map.txt")).unwrap();
        let sorted: BTreeMap<String, u32> = zip
            .keys()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let c = ClassIndexConverter::new(&zip, &sorted).unwrap();
        // sorted: n01751748=0, n01871265=1, n03146219=2
        assert_eq!(c.zip_to_target(0).unwrap(), 2);
        assert_eq!(c.zip_to_target(1).unwrap(), 0);
        assert_eq!(c.target_to_zip(1).unwrap(), 2);
        for z in 0..3 {
            assert_eq!(c.target_to_zip(c.zip_to_target(z).unwrap()).unwrap(), z);
        }
        assert_eq!(
            c.permute_zip_row_to_target(&[10., 11., 12.]).unwrap(),
            vec![11., 12., 10.]
        );
        assert!(c.zip_to_target(3).is_err());
    }

    #[test]
    fn mismatched_sets_and_duplicates_are_errors() {
        let a: BTreeMap<String, u32> = [("n1".to_string(), 0), ("n2".to_string(), 1)].into();
        let b: BTreeMap<String, u32> = [("n1".to_string(), 0), ("n3".to_string(), 1)].into();
        assert!(format!("{}", ClassIndexConverter::new(&a, &b).unwrap_err()).contains("n3"));
        let dup: BTreeMap<String, u32> = [("n1".to_string(), 0), ("n2".to_string(), 0)].into();
        assert!(ClassIndexConverter::new(&dup, &a).is_err());
    }
}
