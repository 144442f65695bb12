//! The embedded font. plotters' `ttf` feature needs fontconfig and system fonts, which bare CI
//! machines lack; with `ab_glyph` every family name must be registered from bytes, so the crate
//! ships a 28 KB Latin/Greek subset of DejaVu Sans (assets/fonts, licence alongside).

use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

static DEJAVU_SANS_SUBSET: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-Subset.ttf");

/// Registers the embedded font under the generic family names plotters uses, once per process.
pub(crate) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in ["sans-serif", "serif", "monospace"] {
                for style in [FontStyle::Normal, FontStyle::Bold] {
                    register_font(family, style, DEJAVU_SANS_SUBSET).map_err(|_| {
                        "the embedded font assets/fonts/DejaVuSans-Subset.ttf does not parse"
                            .to_string()
                    })?;
                }
            }
            Ok(())
        })
        .clone()
}
