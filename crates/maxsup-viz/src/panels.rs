//! Layout shared by the multi-panel figures: one panel per checkpoint, filled row by row.

use crate::render::DrawError;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Most panels side by side before a new row starts.
const MAX_COLUMNS: usize = 4;

/// Splits `area` into at least `n` equal panels (up to four per row) and returns the first `n`.
pub(crate) fn panel_areas<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    n: usize,
) -> Vec<DrawingArea<DB, Shift>> {
    let cols = n.clamp(1, MAX_COLUMNS);
    let rows = n.div_ceil(cols).max(1);
    area.split_evenly((rows, cols))
        .into_iter()
        .take(n)
        .collect()
}

/// Axis range `[min, max]` of `values` widened by 5% below and `top_pad` (a fraction of the
/// span) above, or ±0.5 when flat, so points on the extremes are not drawn on the frame and a
/// legend in the upper corner has free space.
pub(crate) fn padded_range(
    values: impl Iterator<Item = f64>,
    top_pad: f64,
) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    (lo - 0.05 * span)..(hi + top_pad * span)
}

/// Font size of axis tick labels, panel captions and axis descriptions.
pub(crate) const TICK_FONT: u32 = 14;
pub(crate) const CAPTION_FONT: u32 = 18;
pub(crate) const DESC_FONT: u32 = 15;

/// Draws the standard light mesh with axis descriptions on `chart`; counts get integer ticks.
pub(crate) fn draw_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x_desc: &str,
    y_desc: &str,
    y_integer_ticks: bool,
) -> Result<(), DrawError> {
    let integer = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    if y_integer_ticks {
        mesh.y_label_formatter(&integer);
    }
    mesh.light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", TICK_FONT))
        .axis_desc_style(("sans-serif", DESC_FONT))
        .x_labels(6)
        .y_labels(6)
        .draw()?;
    Ok(())
}
