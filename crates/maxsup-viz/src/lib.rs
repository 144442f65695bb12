//! The paper's plots, rendered with plotters to PNG or SVG (chosen by the
//! output file's extension): logit analysis, feature projections, reliability diagrams and
//! Grad-CAM overlay grids.
//!
//! Inputs are plain slices and structs (no tensors), so the numbers can come from
//! `maxsup-metrics`, from files, or from tests. Every figure has its numbers computed by a public
//! data function (histograms, densities, ECE, upsampled/normalised heat maps) that is tested on
//! its own, and a writer that only draws. Fonts are embedded, so rendering needs no system fonts.

mod error;
mod font;
mod gradcam_grid;
mod logit_plots;
mod options;
mod overlay;
mod panels;
mod projection_plot;
mod reliability;
mod render;

pub use error::{Result, VizError};
pub use gradcam_grid::{write_gradcam_grid, GradCamGrid, GradCamRow};
pub use logit_plots::{
    logit_densities, near_zero_share_histograms, plot_logit_density,
    plot_near_zero_share_histograms, plot_top1_vs_near_zero, LogitSummarySeries, NamedSeries,
    DEFAULT_LOGIT_RANGE,
};
pub use maxsup_metrics::Histogram;
pub use options::PlotOptions;
pub use overlay::{
    blend, colorize, gradcam_overlay, jet_color, normalize_unit, resize_rgb_bilinear,
    rgb_from_chw_f32, upsample_bilinear, HeatMap, RgbImage,
};
pub use projection_plot::{plot_feature_projections, ClassName, ProjectionPanel};
pub use reliability::plot_reliability_diagram;
pub use render::OutputFormat;
