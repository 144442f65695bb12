//! Logit analysis of paper App. L / Fig. 5: how many logits sit near zero per
//! sample, how that relates to the top-1 probability, and the density of all logits.
//!
//! The per-sample statistics themselves (`|z| < threshold` share, top-1 softmax probability)
//! come from `maxsup_metrics::logits::analyze_logits`; this module bins and draws them.

use crate::error::{Result, VizError};
use crate::options::PlotOptions;
use crate::panels::{draw_mesh, panel_areas, CAPTION_FONT, TICK_FONT};
use crate::render::{palette, render, title_area, DrawResult, Figure};
use maxsup_metrics::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Logit x-range of the official notebook's density plots.
pub const DEFAULT_LOGIT_RANGE: (f64, f64) = (-4.0, 4.0);

/// A named set of values, e.g. one checkpoint's flattened logits.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedSeries {
    pub name: String,
    pub values: Vec<f32>,
}

/// One checkpoint's per-sample logit statistics (the fields of `maxsup_metrics`' `LogitSummary`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogitSummarySeries {
    pub name: String,
    /// Per sample: fraction of logits with `|z| < threshold`, in [0, 1].
    pub near_zero_share: Vec<f64>,
    /// Per sample: top-1 softmax probability, in [0, 1].
    pub top1_probability: Vec<f64>,
}

/// Histogram over [0, 1] of each checkpoint's per-sample near-zero share, in input order.
pub fn near_zero_share_histograms(
    series: &[LogitSummarySeries],
    bins: usize,
) -> Result<Vec<Histogram>> {
    series
        .iter()
        .map(|s| {
            Histogram::compute(&s.near_zero_share, (0.0, 1.0), bins)
                .map_err(|e| VizError::InvalidInput(e.to_string()))
        })
        .collect()
}

/// Histogram of each series' values over `range`; plot `Histogram::density` for a density
/// that integrates to 1 over the range.
pub fn logit_densities(
    series: &[NamedSeries],
    range: (f64, f64),
    bins: usize,
) -> Result<Vec<Histogram>> {
    series
        .iter()
        .map(|s| {
            Histogram::compute(&s.values, range, bins)
                .map_err(|e| VizError::InvalidInput(e.to_string()))
        })
        .collect()
}

/// Fig. (a): one histogram panel per checkpoint of the per-sample near-zero share, all panels on
/// the same axes (x in [0, 1], y up to the largest count of any panel).
pub fn plot_near_zero_share_histograms(
    series: &[LogitSummarySeries],
    bins: usize,
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    require_some(series.len(), path)?;
    let histograms = near_zero_share_histograms(series, bins).map_err(|e| e.for_file(path))?;
    let figure = ShareHistogramFigure {
        series,
        histograms,
        title: &opts.title,
    };
    render(path, opts, &figure)
}

/// Fig. (b): top-1 probability against near-zero share, one scatter panel per checkpoint.
pub fn plot_top1_vs_near_zero(
    series: &[LogitSummarySeries],
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    require_some(series.len(), path)?;
    for s in series {
        check_summary(s).map_err(|message| VizError::InvalidData {
            path: path.to_path_buf(),
            message,
        })?;
    }
    render(
        path,
        opts,
        &ScatterFigure {
            series,
            title: &opts.title,
        },
    )
}

/// Fig. (c): histogram densities of several checkpoints' logits overlaid, with a legend.
/// `range` is usually [`DEFAULT_LOGIT_RANGE`]; values outside it are left out.
pub fn plot_logit_density(
    series: &[NamedSeries],
    range: (f64, f64),
    bins: usize,
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    require_some(series.len(), path)?;
    let histograms = logit_densities(series, range, bins).map_err(|e| e.for_file(path))?;
    render(
        path,
        opts,
        &DensityFigure {
            series,
            histograms,
            range,
            title: &opts.title,
        },
    )
}

fn require_some(n: usize, path: &Path) -> Result<()> {
    if n == 0 {
        return Err(VizError::InvalidData {
            path: path.to_path_buf(),
            message: "no series to plot".into(),
        });
    }
    Ok(())
}

fn check_summary(s: &LogitSummarySeries) -> std::result::Result<(), String> {
    if s.near_zero_share.len() != s.top1_probability.len() {
        return Err(format!(
            "series '{}': {} near-zero shares but {} top-1 probabilities",
            s.name,
            s.near_zero_share.len(),
            s.top1_probability.len()
        ));
    }
    let in_unit = |v: &f64| (0.0..=1.0).contains(v);
    if let Some(i) = s.near_zero_share.iter().position(|v| !in_unit(v)) {
        return Err(format!(
            "series '{}': near-zero share of sample {i} is {}, not in [0, 1]",
            s.name, s.near_zero_share[i]
        ));
    }
    if let Some(i) = s.top1_probability.iter().position(|v| !in_unit(v)) {
        return Err(format!(
            "series '{}': top-1 probability of sample {i} is {}, not in [0, 1]",
            s.name, s.top1_probability[i]
        ));
    }
    Ok(())
}

struct ShareHistogramFigure<'a> {
    series: &'a [LogitSummarySeries],
    histograms: Vec<Histogram>,
    title: &'a str,
}

impl Figure for ShareHistogramFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let body = title_area(root, self.title)?;
        let top = self
            .histograms
            .iter()
            .flat_map(|h| h.counts.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1) as f64
            * 1.05;
        for (i, (area, (s, h))) in panel_areas(&body, self.series.len())
            .iter()
            .zip(self.series.iter().zip(&self.histograms))
            .enumerate()
        {
            let mut chart = ChartBuilder::on(area)
                .caption(&s.name, ("sans-serif", CAPTION_FONT))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..1f64, 0f64..top)?;
            draw_mesh(&mut chart, "share of near-zero logits", "samples", true)?;
            let colour = palette(i);
            chart.draw_series(h.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(
                |(b, &c)| {
                    Rectangle::new(
                        [(h.edges[b], 0.0), (h.edges[b + 1], c as f64)],
                        colour.mix(0.75).filled(),
                    )
                },
            ))?;
        }
        Ok(())
    }
}

struct ScatterFigure<'a> {
    series: &'a [LogitSummarySeries],
    title: &'a str,
}

impl Figure for ScatterFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let body = title_area(root, self.title)?;
        for (i, (area, s)) in panel_areas(&body, self.series.len())
            .iter()
            .zip(self.series)
            .enumerate()
        {
            let mut chart = ChartBuilder::on(area)
                .caption(&s.name, ("sans-serif", CAPTION_FONT))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.02f64..1.02f64, -0.02f64..1.02f64)?;
            draw_mesh(
                &mut chart,
                "share of near-zero logits",
                "top-1 probability",
                false,
            )?;
            let colour = palette(i).mix(0.45).filled();
            chart.draw_series(
                s.near_zero_share
                    .iter()
                    .zip(&s.top1_probability)
                    .map(|(&x, &y)| Circle::new((x, y), 2, colour)),
            )?;
        }
        Ok(())
    }
}

struct DensityFigure<'a> {
    series: &'a [NamedSeries],
    histograms: Vec<Histogram>,
    range: (f64, f64),
    title: &'a str,
}

impl Figure for DensityFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let body = title_area(root, self.title)?;
        let densities: Vec<Vec<f64>> = self.histograms.iter().map(Histogram::density).collect();
        let top = densities
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
            .max(1e-12)
            * 1.05;
        let mut chart = ChartBuilder::on(&body)
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(self.range.0..self.range.1, 0f64..top)?;
        draw_mesh(&mut chart, "logit value", "density", false)?;
        for (i, ((s, h), d)) in self
            .series
            .iter()
            .zip(&self.histograms)
            .zip(&densities)
            .enumerate()
        {
            let colour = palette(i);
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(
                    h.centers().into_iter().zip(d.iter().copied()),
                    style,
                ))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", TICK_FONT + 2))
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_histograms_and_densities_per_series() {
        let summary = |name: &str, share: Vec<f64>| LogitSummarySeries {
            name: name.into(),
            top1_probability: vec![0.5; share.len()],
            near_zero_share: share,
        };
        let hists = near_zero_share_histograms(
            &[
                summary("a", vec![0.0, 0.1, 0.6, 1.0]),
                summary("b", vec![0.5]),
            ],
            2,
        )
        .unwrap();
        assert_eq!(hists[0].counts, vec![2, 2]);
        assert_eq!(hists[1].counts, vec![0, 1]);
        assert_eq!(hists[0].edges, vec![0.0, 0.5, 1.0]);

        let series = [NamedSeries {
            name: "z".into(),
            values: vec![-3.0, -1.0, 0.5, 1.5, 5.0],
        }];
        let dens = logit_densities(&series, DEFAULT_LOGIT_RANGE, 4).unwrap();
        // 4 in range, bin width 2: density = count / 8.
        assert_eq!(dens[0].density(), vec![0.125, 0.125, 0.25, 0.0]);
        assert_eq!(dens[0].outside(), 1);
    }
}
