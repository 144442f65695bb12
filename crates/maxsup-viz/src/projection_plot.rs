//! Feature-space picture of paper Fig. 1: penultimate activations of three
//! classes projected onto their centroid plane, one panel per checkpoint, one colour per class.
//! The projection itself is `maxsup_metrics::projection::project_onto_class_plane`.

use crate::error::{Result, VizError};
use crate::options::PlotOptions;
use crate::panels::{draw_mesh, padded_range, panel_areas, CAPTION_FONT, TICK_FONT};
use crate::render::{palette, render, title_area, DrawResult, Figure};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One checkpoint's projected samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionPanel {
    /// Panel caption, e.g. the checkpoint or method name.
    pub name: String,
    /// 2-D coordinates, one per sample.
    pub points: Vec<[f64; 2]>,
    /// Class id of each sample; must be one of the ids given to the plot.
    pub labels: Vec<u32>,
}

/// A class shown in the legend: its id (as in [`ProjectionPanel::labels`]) and display name.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassName {
    pub id: u32,
    pub name: String,
}

/// Side-by-side scatter panels (own axes each: checkpoints differ in feature scale), class `k`
/// of `classes` in palette colour `k`, legend with the class names in every panel.
pub fn plot_feature_projections(
    panels: &[ProjectionPanel],
    classes: &[ClassName],
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    let invalid = |message: String| VizError::InvalidData {
        path: path.to_path_buf(),
        message,
    };
    if panels.is_empty() || classes.is_empty() {
        return Err(invalid(format!(
            "need panels and classes, got {} panels and {} classes",
            panels.len(),
            classes.len()
        )));
    }
    let mut colour_of = Vec::with_capacity(panels.len());
    for p in panels {
        if p.points.len() != p.labels.len() {
            return Err(invalid(format!(
                "panel '{}': {} points but {} labels",
                p.name,
                p.points.len(),
                p.labels.len()
            )));
        }
        if let Some(i) = p
            .points
            .iter()
            .position(|q| !(q[0].is_finite() && q[1].is_finite()))
        {
            return Err(invalid(format!(
                "panel '{}': point {i} is not finite: {:?}",
                p.name, p.points[i]
            )));
        }
        let slots: Vec<usize> = p
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                classes.iter().position(|c| c.id == *l).ok_or_else(|| {
                    invalid(format!(
                        "panel '{}': sample {i} has class {l}, not among the plotted classes",
                        p.name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        colour_of.push(slots);
    }
    render(
        path,
        opts,
        &ProjectionFigure {
            panels,
            classes,
            colour_of,
            title: &opts.title,
        },
    )
}

/// Extra y-range above the highest point, as a fraction of the data span, for the legend.
const LEGEND_HEADROOM: f64 = 0.35;

struct ProjectionFigure<'a> {
    panels: &'a [ProjectionPanel],
    classes: &'a [ClassName],
    /// Per panel, per sample: index of its class in `classes`.
    colour_of: Vec<Vec<usize>>,
    title: &'a str,
}

impl Figure for ProjectionFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let body = title_area(root, self.title)?;
        for ((area, panel), slots) in panel_areas(&body, self.panels.len())
            .iter()
            .zip(self.panels)
            .zip(&self.colour_of)
        {
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.name, ("sans-serif", CAPTION_FONT))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(
                    padded_range(panel.points.iter().map(|p| p[0]), 0.05),
                    padded_range(panel.points.iter().map(|p| p[1]), LEGEND_HEADROOM),
                )?;
            draw_mesh(&mut chart, "", "", false)?;
            for (k, class) in self.classes.iter().enumerate() {
                let colour = palette(k);
                let points = panel.points.iter().zip(slots).filter(|(_, &s)| s == k);
                chart
                    .draw_series(
                        points.map(|(p, _)| Circle::new((p[0], p[1]), 3, colour.mix(0.7).filled())),
                    )?
                    .label(class.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", TICK_FONT))
                .draw()?;
        }
        Ok(())
    }
}
