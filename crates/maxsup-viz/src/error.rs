//! The one error type of the crate. Every error from a plot writer names the output file, so a
//! caller writing dozens of figures can tell which one failed and why.

use std::path::PathBuf;

/// Errors of the data functions and the plot writers.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// Bad arguments to a pure data function (no file involved).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Bad data handed to a plot writer.
    #[error("{}: invalid plot data: {message}", path.display())]
    InvalidData { path: PathBuf, message: String },
    /// The output extension is not one the writer can produce.
    #[error("{}: unsupported output format (expected {expected})", path.display())]
    UnsupportedFormat {
        path: PathBuf,
        expected: &'static str,
    },
    /// Drawing or encoding failed.
    #[error("{}: rendering failed: {message}", path.display())]
    Render { path: PathBuf, message: String },
    /// Writing the finished file failed.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl VizError {
    /// Re-labels a data-function error as invalid data for the plot written to `path`.
    pub(crate) fn for_file(self, path: &std::path::Path) -> Self {
        match self {
            VizError::InvalidInput(message) => VizError::InvalidData {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = VizError> = std::result::Result<T, E>;
