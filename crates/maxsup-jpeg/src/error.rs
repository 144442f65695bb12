//! Errors: a stream this decoder does not handle (the caller falls back to a general decoder) versus
//! a stream that is broken (the caller reports it).

/// Why a JPEG could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JpegError {
    /// Valid JPEG that uses a feature outside this decoder's scope (arithmetic coding, lossless,
    /// 12-bit samples, CMYK, ...). Callers should decode it with a general-purpose decoder.
    #[error("unsupported JPEG feature: {0}")]
    Unsupported(String),
    /// Malformed or truncated stream.
    #[error("corrupt JPEG: {0}")]
    Corrupt(String),
}

pub(crate) fn corrupt<T>(msg: impl Into<String>) -> Result<T, JpegError> {
    Err(JpegError::Corrupt(msg.into()))
}

pub(crate) fn unsupported<T>(msg: impl Into<String>) -> Result<T, JpegError> {
    Err(JpegError::Unsupported(msg.into()))
}
