//! Reliability diagram (calibration, paper-facts §4.3): per confidence bin the accuracy as a bar,
//! the gap to the bin's mean confidence shaded, the diagonal of perfect calibration, and the
//! expected calibration error in the title. Bin statistics come from
//! `maxsup_metrics::calibration` (`ReliabilityBin` has the same three numbers).

use crate::error::{Result, VizError};
use crate::options::PlotOptions;
use crate::panels::{draw_mesh, TICK_FONT};
use crate::render::{palette, render, title_area, DrawResult, Figure};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One of M equal-width confidence bins; bin `m` spans `(m/M, (m+1)/M]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationBin {
    /// Samples whose top-1 confidence falls in the bin.
    pub count: u64,
    /// Fraction of them classified correctly, in [0, 1] (ignored when `count` is 0).
    pub accuracy: f64,
    /// Their mean top-1 confidence, in [0, 1] (ignored when `count` is 0).
    pub confidence: f64,
}

/// `ECE = Σ_m |B_m| · |acc_m − conf_m| / Σ_m |B_m|` over all samples (paper-facts §4.3).
pub fn expected_calibration_error(bins: &[CalibrationBin]) -> Result<f64> {
    check_bins(bins).map_err(VizError::InvalidInput)?;
    let total: u64 = bins.iter().map(|b| b.count).sum();
    let weighted: f64 = bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| b.count as f64 * (b.accuracy - b.confidence).abs())
        .sum();
    Ok(weighted / total as f64)
}

fn check_bins(bins: &[CalibrationBin]) -> std::result::Result<(), String> {
    if bins.is_empty() {
        return Err("no calibration bins".into());
    }
    for (m, b) in bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
        if !(0.0..=1.0).contains(&b.accuracy) || !(0.0..=1.0).contains(&b.confidence) {
            return Err(format!(
                "bin {m}: accuracy {} and confidence {} must lie in [0, 1]",
                b.accuracy, b.confidence
            ));
        }
    }
    if bins.iter().all(|b| b.count == 0) {
        return Err("every calibration bin is empty".into());
    }
    Ok(())
}

/// Draws the reliability diagram; the title gets `ECE = …` appended (or is just that).
pub fn plot_reliability_diagram(
    bins: &[CalibrationBin],
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    let ece = expected_calibration_error(bins).map_err(|e| e.for_file(path))?;
    let title = if opts.title.is_empty() {
        format!("ECE = {ece:.4}")
    } else {
        format!("{} (ECE = {ece:.4})", opts.title)
    };
    render(path, opts, &ReliabilityFigure { bins, title })
}

struct ReliabilityFigure<'a> {
    bins: &'a [CalibrationBin],
    title: String,
}

impl Figure for ReliabilityFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let body = title_area(root, &self.title)?;
        let mut chart = ChartBuilder::on(&body)
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        draw_mesh(&mut chart, "confidence", "accuracy", false)?;
        let width = 1.0 / self.bins.len() as f64;
        let filled: Vec<(f64, &CalibrationBin)> = self
            .bins
            .iter()
            .enumerate()
            .filter(|(_, b)| b.count > 0)
            .map(|(m, b)| (m as f64 * width, b))
            .collect();
        let accuracy_colour = palette(0);
        chart
            .draw_series(filled.iter().map(|(x, b)| {
                Rectangle::new(
                    [(*x, 0.0), (x + width, b.accuracy)],
                    accuracy_colour.mix(0.85).filled(),
                )
            }))?
            .label("accuracy")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], accuracy_colour.filled())
            });
        for (x, b) in &filled {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(*x, 0.0), (x + width, b.accuracy)],
                BLACK.stroke_width(1),
            )))?;
        }
        let gap_colour = palette(3);
        chart
            .draw_series(filled.iter().map(|(x, b)| {
                Rectangle::new(
                    [(*x, b.accuracy), (x + width, b.confidence)],
                    gap_colour.mix(0.35).filled(),
                )
            }))?
            .label("gap to confidence")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], gap_colour.mix(0.35).filled())
            });
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.6).stroke_width(2),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.6).stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", TICK_FONT + 1))
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(count: u64, accuracy: f64, confidence: f64) -> CalibrationBin {
        CalibrationBin {
            count,
            accuracy,
            confidence,
        }
    }

    #[test]
    fn ece_is_the_count_weighted_gap() {
        // (10·|0.5−0.25| + 30·|0.75−0.875| + 0·anything) / 40 = (2.5 + 3.75) / 40 = 0.15625
        let bins = [bin(10, 0.5, 0.25), bin(0, 0.9, 0.1), bin(30, 0.75, 0.875)];
        assert_eq!(expected_calibration_error(&bins).unwrap(), 0.15625);
    }

    #[test]
    fn ece_rejects_empty_or_out_of_range_bins() {
        assert!(expected_calibration_error(&[]).is_err());
        assert!(expected_calibration_error(&[bin(0, 0.5, 0.5)]).is_err());
        assert!(expected_calibration_error(&[bin(3, 1.5, 0.5)]).is_err());
        assert!(expected_calibration_error(&[bin(3, 0.5, f64::NAN)]).is_err());
    }
}
