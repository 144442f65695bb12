//! From a figure description to a file: picks PNG or SVG from the extension, draws into memory
//! and writes the file only when drawing succeeded (plotters' own file backends write half-drawn
//! files on error, from their `Drop`).

use crate::error::{Result, VizError};
use crate::font::ensure_font;
use crate::options::PlotOptions;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// File formats the writers produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Svg,
}

impl OutputFormat {
    /// Format named by the extension of `path` (case-insensitive `.png` or `.svg`).
    pub fn from_path(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(OutputFormat::Png),
            Some("svg") => Ok(OutputFormat::Svg),
            _ => Err(VizError::UnsupportedFormat {
                path: path.to_path_buf(),
                expected: ".png or .svg",
            }),
        }
    }
}

/// A drawing failure, already turned into text (plotters' error type depends on the backend).
pub(crate) struct DrawError(pub String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        DrawError(e.to_string())
    }
}

pub(crate) type DrawResult = std::result::Result<(), DrawError>;

/// Something that can draw itself on any plotters backend.
pub(crate) trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Draws `figure` on a white canvas of `opts`' size and writes it to `path` as PNG or SVG.
pub(crate) fn render(path: &Path, opts: &PlotOptions, figure: &impl Figure) -> Result<()> {
    let format = OutputFormat::from_path(path)?;
    opts.check(path)?;
    let render_error = |message: String| VizError::Render {
        path: path.to_path_buf(),
        message,
    };
    ensure_font().map_err(render_error)?;
    let (w, h) = (opts.width, opts.height);
    let bytes = match format {
        OutputFormat::Png => {
            let mut pixels = vec![0u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
                draw_and_present(&root, figure).map_err(|e| render_error(e.0))?;
            }
            encode_png(&pixels, w, h).map_err(render_error)?
        }
        OutputFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                draw_and_present(&root, figure).map_err(|e| render_error(e.0))?;
            }
            svg.into_bytes()
        }
    };
    std::fs::write(path, bytes).map_err(|source| VizError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn draw_and_present<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &impl Figure,
) -> DrawResult {
    root.fill(&WHITE)?;
    figure.draw(root)?;
    root.present()?;
    Ok(())
}

/// Encodes 8-bit RGB pixels (row-major, HWC) as PNG.
pub(crate) fn encode_png(
    rgb: &[u8],
    width: u32,
    height: u32,
) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| format!("PNG header: {e}"))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| format!("PNG data: {e}"))?;
    writer.finish().map_err(|e| format!("PNG finish: {e}"))?;
    Ok(out)
}

/// Splits `root` into a title strip (when `title` is non-empty) and the area below it.
pub(crate) fn title_area<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawError> {
    if title.is_empty() {
        return Ok(root.clone());
    }
    Ok(root.titled(title, ("sans-serif", 24))?)
}

/// Colours for series and classes (matplotlib's tab10, so figures look like the paper's).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Colour number `i`, cycling through [`PALETTE`].
pub(crate) fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}
