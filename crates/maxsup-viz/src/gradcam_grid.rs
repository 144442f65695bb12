//! Grid of Grad-CAM overlays like paper Fig. 2: rows are checkpoints or methods (labelled on the
//! left), columns are images (optionally labelled on top), optionally with the plain inputs as a
//! first row. PNG only: the overlays are raster images.

use crate::error::{Result, VizError};
use crate::font::ensure_font;
use crate::options::PlotOptions;
use crate::overlay::{gradcam_overlay, resize_rgb_bilinear, HeatMap, RgbImage};
use crate::render::{encode_png, OutputFormat};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One row of the grid: a label and one Grad-CAM map per input image (any map size; each is
/// upsampled to its image).
#[derive(Clone, Debug, PartialEq)]
pub struct GradCamRow {
    pub label: String,
    pub cams: Vec<HeatMap>,
}

/// Everything drawn in the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCamGrid {
    /// Input images, one per column, all of the same size.
    pub images: Vec<RgbImage>,
    /// Column captions: empty for none, else one per image.
    pub column_labels: Vec<String>,
    pub rows: Vec<GradCamRow>,
    /// Weight of the heat-map colours in the blend, in [0, 1] (pytorch_grad_cam's default
    /// `image_weight = 0.5` corresponds to 0.5).
    pub alpha: f32,
    /// Draw the plain inputs as a first row labelled "input".
    pub show_inputs: bool,
}

const GAP: u32 = 6;
const LABEL_FONT: u32 = 18;
const TITLE_FONT: u32 = 24;
const MIN_CELL: u32 = 8;

/// Writes the grid as a PNG of `opts`' size; cells are scaled to fit it, keeping the images'
/// aspect ratio.
pub fn write_gradcam_grid(
    grid: &GradCamGrid,
    path: impl AsRef<Path>,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    if OutputFormat::from_path(path)? != OutputFormat::Png {
        return Err(VizError::UnsupportedFormat {
            path: path.to_path_buf(),
            expected: ".png (Grad-CAM grids are raster images)",
        });
    }
    opts.check(path)?;
    let cells = overlay_rows(grid).map_err(|e| e.for_file(path))?;
    let render_error = |message: String| VizError::Render {
        path: path.to_path_buf(),
        message,
    };
    ensure_font().map_err(render_error)?;
    let pixels = draw_grid(grid, &cells, opts).map_err(render_error)?;
    let bytes = encode_png(&pixels, opts.width, opts.height).map_err(render_error)?;
    std::fs::write(path, bytes).map_err(|source| VizError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Labels and images of every grid row, after validation: the optional input row first.
fn overlay_rows(grid: &GradCamGrid) -> Result<Vec<(String, Vec<RgbImage>)>> {
    let invalid = |m: String| Err(VizError::InvalidInput(m));
    let Some(first) = grid.images.first() else {
        return invalid("no images".into());
    };
    if grid.rows.is_empty() {
        return invalid("no Grad-CAM rows".into());
    }
    if let Some(i) = grid
        .images
        .iter()
        .position(|im| (im.height, im.width) != (first.height, first.width))
    {
        let im = &grid.images[i];
        return invalid(format!(
            "image {i} is {}x{} but image 0 is {}x{}",
            im.height, im.width, first.height, first.width
        ));
    }
    if !grid.column_labels.is_empty() && grid.column_labels.len() != grid.images.len() {
        return invalid(format!(
            "{} column labels for {} images",
            grid.column_labels.len(),
            grid.images.len()
        ));
    }
    let mut rows = Vec::with_capacity(grid.rows.len() + 1);
    if grid.show_inputs {
        rows.push(("input".to_string(), grid.images.clone()));
    }
    for row in &grid.rows {
        if row.cams.len() != grid.images.len() {
            return invalid(format!(
                "row '{}' has {} maps for {} images",
                row.label,
                row.cams.len(),
                grid.images.len()
            ));
        }
        let overlays = grid
            .images
            .iter()
            .zip(&row.cams)
            .map(|(im, cam)| gradcam_overlay(im, cam, grid.alpha))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| VizError::InvalidInput(format!("row '{}': {e}", row.label)))?;
        rows.push((row.label.clone(), overlays));
    }
    Ok(rows)
}

/// Draws title, labels and resized cells into an RGB buffer of `opts`' size.
fn draw_grid(
    grid: &GradCamGrid,
    rows: &[(String, Vec<RgbImage>)],
    opts: &PlotOptions,
) -> std::result::Result<Vec<u8>, String> {
    let (w, h) = (opts.width, opts.height);
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        let text = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(text)?;
        let label_style = TextStyle::from(("sans-serif", LABEL_FONT).into_font());
        let label_width = rows
            .iter()
            .map(|(label, _)| root.estimate_text_size(label, &label_style).map(|s| s.0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(text)?
            .into_iter()
            .max()
            .unwrap_or(0)
            + 2 * GAP;
        let title_height = if opts.title.is_empty() {
            0
        } else {
            TITLE_FONT + 2 * GAP
        };
        let header_height = if grid.column_labels.is_empty() {
            0
        } else {
            LABEL_FONT + 2 * GAP
        };
        let (ncols, nrows) = (grid.images.len() as u32, rows.len() as u32);
        let (ih, iw) = (grid.images[0].height as f64, grid.images[0].width as f64);
        let avail_w = w as f64 - label_width as f64 - (GAP * (ncols + 1)) as f64;
        let avail_h = h as f64 - (title_height + header_height) as f64 - (GAP * (nrows + 1)) as f64;
        let scale = (avail_w / (ncols as f64 * iw)).min(avail_h / (nrows as f64 * ih));
        let (cell_w, cell_h) = ((iw * scale).floor() as u32, (ih * scale).floor() as u32);
        if scale <= 0.0 || cell_w < MIN_CELL || cell_h < MIN_CELL {
            return Err(format!(
                "canvas {w}x{h} is too small for {nrows} rows x {ncols} columns of images"
            ));
        }
        let grid_w = label_width + ncols * cell_w + (ncols + 1) * GAP;
        let grid_h = title_height + header_height + nrows * cell_h + (nrows + 1) * GAP;
        let (x0, y0) = (((w - grid_w) / 2) as i32, ((h - grid_h) / 2) as i32);
        if !opts.title.is_empty() {
            let style = TextStyle::from(("sans-serif", TITLE_FONT).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw_text(
                &opts.title,
                &style,
                ((w / 2) as i32, y0 + (title_height / 2) as i32),
            )
            .map_err(text)?;
        }
        let cell_x = |c: u32| x0 + (label_width + GAP + c * (cell_w + GAP)) as i32;
        let cell_y = |r: u32| y0 + (title_height + header_height + GAP + r * (cell_h + GAP)) as i32;
        let header_style = label_style.pos(Pos::new(HPos::Center, VPos::Center));
        for (c, label) in grid.column_labels.iter().enumerate() {
            let centre = (
                cell_x(c as u32) + cell_w as i32 / 2,
                y0 + (title_height + header_height / 2) as i32,
            );
            root.draw_text(label, &header_style, centre).map_err(text)?;
        }
        let row_style = label_style.pos(Pos::new(HPos::Right, VPos::Center));
        for (r, (label, images)) in rows.iter().enumerate() {
            let y = cell_y(r as u32);
            root.draw_text(
                label,
                &row_style,
                (cell_x(0) - GAP as i32, y + cell_h as i32 / 2),
            )
            .map_err(text)?;
            for (c, image) in images.iter().enumerate() {
                let cell = resize_rgb_bilinear(image, cell_h as usize, cell_w as usize)
                    .map_err(|e| e.to_string())?;
                let element = BitMapElement::with_owned_buffer(
                    (cell_x(c as u32), y),
                    (cell_w, cell_h),
                    cell.data.clone(),
                )
                .ok_or("grid cell buffer has the wrong size")?;
                root.draw(&element).map_err(text)?;
            }
        }
        root.present().map_err(text)?;
    }
    Ok(pixels)
}
