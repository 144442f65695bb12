//! Options shared by every plot writer.

use crate::error::{Result, VizError};
use std::path::Path;

/// Title and canvas size of a figure. The output format (PNG or SVG) comes from the file
/// extension, not from here, so one options value can write both.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotOptions {
    /// Figure title drawn at the top; empty for none.
    pub title: String,
    /// Canvas width in pixels (SVG: user units).
    pub width: u32,
    /// Canvas height in pixels (SVG: user units).
    pub height: u32,
}

impl Default for PlotOptions {
    fn default() -> Self {
        Self {
            title: String::new(),
            width: 1200,
            height: 500,
        }
    }
}

impl PlotOptions {
    /// Default size with the given title.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// Same options with another canvas size.
    pub fn with_size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Rejects canvases too small to hold axes and labels (plotters panics or draws garbage
    /// below a few dozen pixels) or too large to allocate sensibly.
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        const MIN: u32 = 64;
        const MAX: u32 = 16_384;
        if !(MIN..=MAX).contains(&self.width) || !(MIN..=MAX).contains(&self.height) {
            return Err(VizError::InvalidData {
                path: path.to_path_buf(),
                message: format!(
                    "canvas {}x{} outside {MIN}..={MAX} pixels per side",
                    self.width, self.height
                ),
            });
        }
        Ok(())
    }
}
