//! Accuracy and calibration of classifier outputs: top-1/top-5 accuracy,
//! negative log-likelihood, expected calibration error and reliability-diagram data.
//!
//! ECE uses M equal-width bins `(m/M, (m+1)/M]` over the top-1 softmax probability and is
//! computed over the whole dataset: `ECE = Σ_m |B_m|/N · |acc(B_m) - conf(B_m)|` (the DeiT code
//! averages per-batch ECEs instead, which is not the same number; torchmetrics' bins are closed on
//! the left, which only differs for confidences exactly on a bin edge).
//! The accumulator is fed batch by batch so a training loop can use it every epoch.

use crate::softmax_row::row_facts;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::Serialize;

/// One confidence bin of a reliability diagram.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Bin interval `(lower, upper]`.
    pub lower: f64,
    pub upper: f64,
    /// Samples whose confidence falls in the bin.
    pub count: u64,
    /// Fraction of them predicted correctly (0 for an empty bin).
    pub accuracy: f64,
    /// Their mean confidence (0 for an empty bin).
    pub confidence: f64,
}

/// Reliability-diagram data and the ECE for one bin count M.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReliabilityDiagram {
    pub num_bins: usize,
    pub ece: f64,
    pub bins: Vec<ReliabilityBin>,
}

impl ReliabilityDiagram {
    /// The ECE of `bins`, with [`ReliabilityDiagram::from_bins`]'s checks, without taking them.
    pub fn ece_of(bins: &[ReliabilityBin]) -> Result<f64> {
        ensure!(!bins.is_empty(), "no calibration bins");
        for (m, b) in bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
            ensure!(
                (0.0..=1.0).contains(&b.accuracy) && (0.0..=1.0).contains(&b.confidence),
                "bin {m}: accuracy {} and confidence {} must lie in [0, 1]",
                b.accuracy,
                b.confidence
            );
        }
        let n: u64 = bins.iter().map(|b| b.count).sum();
        ensure!(n > 0, "every calibration bin is empty");
        Ok(bins
            .iter()
            .map(|b| b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs())
            .sum())
    }

    /// The diagram of `bins` (consecutive, covering (0, 1]) with its ECE,
    /// `Σ_m |B_m| / n · |acc_m − conf_m|`. Errors when no sample is in any bin, or a filled
    /// bin's accuracy or confidence is outside [0, 1].
    pub fn from_bins(bins: Vec<ReliabilityBin>) -> Result<Self> {
        let ece = Self::ece_of(&bins)?;
        Ok(Self {
            num_bins: bins.len(),
            ece,
            bins,
        })
    }
}

/// Everything the accumulator measures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationReport {
    pub samples: u64,
    /// Fraction with the label as (first) argmax.
    pub top1: f64,
    /// Fraction with the label among the 5 largest logits (all samples count when K <= 5).
    pub top5: f64,
    /// Mean `-log softmax(z)[y]`.
    pub nll: f64,
    /// One diagram per requested bin count, in the order requested.
    pub reliability: Vec<ReliabilityDiagram>,
}

impl CalibrationReport {
    /// ECE for `num_bins` bins, if that bin count was requested.
    pub fn ece(&self, num_bins: usize) -> Option<f64> {
        self.reliability
            .iter()
            .find(|r| r.num_bins == num_bins)
            .map(|r| r.ece)
    }
}

#[derive(Clone, Debug)]
struct BinSums {
    count: Vec<u64>,
    correct: Vec<u64>,
    confidence: Vec<f64>,
}

/// Streaming accumulator; default bin counts are 10 (DeiT code) and 15 (torchmetrics default).
#[derive(Clone, Debug)]
pub struct CalibrationAccumulator {
    num_classes: usize,
    bins: Vec<BinSums>,
    samples: u64,
    top1: u64,
    top5: u64,
    nll_sum: f64,
}

impl CalibrationAccumulator {
    /// Accumulator for `num_classes` logits per row with ECE at 10 and 15 bins.
    pub fn new(num_classes: usize) -> Result<Self> {
        Self::with_bins(num_classes, &[10, 15])
    }

    /// Accumulator with the given ECE bin counts.
    pub fn with_bins(num_classes: usize, bin_counts: &[usize]) -> Result<Self> {
        ensure!(
            num_classes > 0,
            "calibration: number of classes must be positive"
        );
        ensure!(
            bin_counts.iter().all(|&m| m > 0),
            "calibration: bin counts must be positive, got {bin_counts:?}"
        );
        let bins = bin_counts
            .iter()
            .map(|&m| BinSums {
                count: vec![0; m],
                correct: vec![0; m],
                confidence: vec![0.0; m],
            })
            .collect();
        Ok(Self {
            num_classes,
            bins,
            samples: 0,
            top1: 0,
            top5: 0,
            nll_sum: 0.0,
        })
    }

    /// Adds a batch: `logits` row-major [rows, K], one label per row.
    pub fn push(&mut self, logits: &[f32], labels: &[u32]) -> Result<()> {
        let k = self.num_classes;
        ensure!(
            logits.len() == labels.len() * k,
            "calibration: {} logits for {} labels with K={k}",
            logits.len(),
            labels.len()
        );
        let first = self.samples;
        let facts = logits
            .par_chunks(k)
            .zip(labels.par_iter())
            .enumerate()
            .map(|(i, (row, &y))| row_facts(row, y, first + i as u64))
            .collect::<Result<Vec<_>>>()?;
        for f in facts {
            let correct = f.label_rank == 0;
            self.top1 += u64::from(correct);
            self.top5 += u64::from(f.label_rank < 5);
            self.nll_sum += f.nll;
            for b in &mut self.bins {
                let m = bin_index(f.confidence, b.count.len());
                b.count[m] += 1;
                b.correct[m] += u64::from(correct);
                b.confidence[m] += f.confidence;
            }
        }
        self.samples += labels.len() as u64;
        Ok(())
    }

    /// [`push`](Self::push) for i64 labels as stored in feature files.
    pub fn push_i64(&mut self, logits: &[f32], labels: &[i64]) -> Result<()> {
        let labels = crate::feature_file::labels_to_classes(labels)?;
        self.push(logits, &labels)
    }

    /// Every count and sum as one vector, so that accumulators of several processes can be
    /// added element-wise (an all-reduce) and the report be the one of all their samples. Counts
    /// are exact in f64 up to 2^53 samples.
    pub fn to_sums(&self) -> Vec<f64> {
        let mut v = vec![
            self.samples as f64,
            self.top1 as f64,
            self.top5 as f64,
            self.nll_sum,
        ];
        for b in &self.bins {
            v.extend(b.count.iter().map(|&c| c as f64));
            v.extend(b.correct.iter().map(|&c| c as f64));
            v.extend_from_slice(&b.confidence);
        }
        v
    }

    /// Replaces the counts and sums with `sums`, laid out as [`to_sums`](Self::to_sums) gives
    /// them (e.g. after summing them over processes).
    pub fn set_sums(&mut self, sums: &[f64]) -> Result<()> {
        let expected = self.to_sums().len();
        ensure!(
            sums.len() == expected,
            "calibration: {} sums for an accumulator of {expected}",
            sums.len()
        );
        let count = |v: f64| v as u64;
        self.samples = count(sums[0]);
        self.top1 = count(sums[1]);
        self.top5 = count(sums[2]);
        self.nll_sum = sums[3];
        let mut at = 4;
        for b in &mut self.bins {
            let m = b.count.len();
            for (i, c) in b.count.iter_mut().enumerate() {
                *c = count(sums[at + i]);
            }
            for (i, c) in b.correct.iter_mut().enumerate() {
                *c = count(sums[at + m + i]);
            }
            b.confidence.copy_from_slice(&sums[at + 2 * m..at + 3 * m]);
            at += 3 * m;
        }
        Ok(())
    }

    /// The metrics over everything pushed so far.
    pub fn report(&self) -> Result<CalibrationReport> {
        ensure!(self.samples > 0, "calibration: no samples were pushed");
        let n = self.samples as f64;
        let reliability: Vec<ReliabilityDiagram> = self
            .bins
            .iter()
            .map(|b| {
                let m = b.count.len();
                let bins: Vec<ReliabilityBin> = (0..m)
                    .map(|i| {
                        let c = b.count[i];
                        let (accuracy, confidence) = if c == 0 {
                            (0.0, 0.0)
                        } else {
                            (b.correct[i] as f64 / c as f64, b.confidence[i] / c as f64)
                        };
                        ReliabilityBin {
                            lower: i as f64 / m as f64,
                            upper: (i + 1) as f64 / m as f64,
                            count: c,
                            accuracy,
                            confidence,
                        }
                    })
                    .collect();
                ReliabilityDiagram::from_bins(bins)
            })
            .collect::<Result<_>>()?;
        Ok(CalibrationReport {
            samples: self.samples,
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            nll: self.nll_sum / n,
            reliability,
        })
    }
}

/// Bin `m` holds confidences in `(m/M, (m+1)/M]`; confidence 0 (impossible for a softmax
/// maximum) goes to the first bin.
fn bin_index(confidence: f64, num_bins: usize) -> usize {
    ((confidence * num_bins as f64).ceil() as usize).clamp(1, num_bins) - 1
}

#[cfg(test)]
mod tests {
    use super::{bin_index, ReliabilityBin, ReliabilityDiagram};

    fn bin(count: u64, accuracy: f64, confidence: f64) -> ReliabilityBin {
        ReliabilityBin {
            lower: 0.0,
            upper: 1.0,
            count,
            accuracy,
            confidence,
        }
    }

    #[test]
    fn ece_is_the_count_weighted_gap() {
        // (10·|0.5−0.25| + 30·|0.75−0.875| + 0·anything) / 40 = (2.5 + 3.75) / 40 = 0.15625
        let bins = vec![bin(10, 0.5, 0.25), bin(0, 0.9, 0.1), bin(30, 0.75, 0.875)];
        assert_eq!(ReliabilityDiagram::from_bins(bins).unwrap().ece, 0.15625);
    }

    #[test]
    fn ece_rejects_empty_or_out_of_range_bins() {
        assert!(ReliabilityDiagram::from_bins(vec![]).is_err());
        assert!(ReliabilityDiagram::from_bins(vec![bin(0, 0.5, 0.5)]).is_err());
        assert!(ReliabilityDiagram::from_bins(vec![bin(3, 1.5, 0.5)]).is_err());
        assert!(ReliabilityDiagram::from_bins(vec![bin(3, 0.5, f64::NAN)]).is_err());
    }

    #[test]
    fn bins_are_closed_on_the_right() {
        assert_eq!(bin_index(0.1, 10), 0);
        assert_eq!(bin_index(0.1000001, 10), 1);
        assert_eq!(bin_index(1.0, 10), 9);
        assert_eq!(bin_index(0.0, 10), 0);
        assert_eq!(bin_index(0.5, 15), 7);
    }

    #[test]
    fn summed_parts_report_like_the_whole() {
        use super::CalibrationAccumulator;
        let logits: Vec<f32> = (0..30)
            .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.0)
            .collect();
        let labels: Vec<u32> = (0..10).map(|i| (i * 7 % 3) as u32).collect();
        let mut whole = CalibrationAccumulator::new(3).unwrap();
        whole.push(&logits, &labels).unwrap();
        let (mut a, mut b) = (
            CalibrationAccumulator::new(3).unwrap(),
            CalibrationAccumulator::new(3).unwrap(),
        );
        a.push(&logits[..12], &labels[..4]).unwrap();
        b.push(&logits[12..], &labels[4..]).unwrap();
        let sums: Vec<f64> = a
            .to_sums()
            .iter()
            .zip(b.to_sums())
            .map(|(x, y)| x + y)
            .collect();
        a.set_sums(&sums).unwrap();
        let (r, w) = (a.report().unwrap(), whole.report().unwrap());
        assert_eq!((r.samples, r.top1, r.top5), (w.samples, w.top1, w.top5));
        assert!(
            (r.nll - w.nll).abs() < 1e-12
                && (r.ece(15).unwrap() - w.ece(15).unwrap()).abs() < 1e-12
        );
        assert!(a.set_sums(&sums[1..]).is_err());
    }
}
