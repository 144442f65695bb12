//! The in-memory image every dataset hands to the transforms: 8-bit RGB, interleaved (HWC).

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R G B R G B ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps a buffer; errors when the length does not match the dimensions.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> anyhow::Result<RgbImage> {
        anyhow::ensure!(
            data.len() == width * height * 3,
            "RGB buffer has {} bytes, expected {}x{}x3 = {}",
            data.len(),
            width,
            height,
            width * height * 3
        );
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.data[o], self.data[o + 1], self.data[o + 2]]
    }
}
