//! Reliability diagram (calibration, Guo et al. 2017): per confidence bin the accuracy as a bar,
//! the gap to the bin's mean confidence shaded, the diagonal of perfect calibration, and the
//! expected calibration error in the title. The bins and the ECE are `maxsup_metrics`'
//! [`ReliabilityDiagram`] (from a `CalibrationAccumulator` report, or built from bins).

use crate::error::{Result, VizError};
use crate::options::PlotOptions;
use crate::panels::{draw_mesh, TICK_FONT};
use crate::render::{palette, render, title_area, DrawResult, Figure};
use maxsup_metrics::{ReliabilityBin, ReliabilityDiagram};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Draws the reliability diagram; the title gets `ECE = …` appended (or is just that).
pub fn plot_reliability_diagram(
    diagram: &ReliabilityDiagram,
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    // Re-checked: the fields are public, so the diagram may not come from `from_bins`.
    let ece = ReliabilityDiagram::ece_of(&diagram.bins)
        .map_err(|e| VizError::InvalidInput(e.to_string()).for_file(path))?;
    let bins = &diagram.bins;
    let title = if opts.title.is_empty() {
        format!("ECE = {ece:.4}")
    } else {
        format!("{} (ECE = {ece:.4})", opts.title)
    };
    render(path, opts, &ReliabilityFigure { bins, title })
}

struct ReliabilityFigure<'a> {
    bins: &'a [ReliabilityBin],
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
        let filled: Vec<(f64, &ReliabilityBin)> = self
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
