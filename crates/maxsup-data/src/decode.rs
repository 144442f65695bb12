//! Image decoding: JPEG (baseline and progressive; grayscale, YCbCr, CMYK/YCCK all to RGB) via
//! `zune-jpeg`, PNG (any bit depth / color type, alpha dropped like PIL's `convert("RGB")`) via `png`.
//!
//! Training crops decode only the crop, at reduced scale when it is shrunk a lot, with `maxsup-jpeg`
//! ([`decode_jpeg_crop`]).
//!
//! The format is detected from the bytes, not the file name (ImageNet has PNG and CMYK files named
//! `.JPEG`). The JPEG decoder runs in strict mode: a truncated or corrupt stream is an error, never
//! a gray-filled image.

use anyhow::{bail, Context};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::image::RgbImage;
use crate::resample::Rect;
use maxsup_jpeg::JpegError;

/// Largest accepted width or height (guards against absurd headers).
pub const MAX_SIDE: usize = 1 << 15;

/// Largest accepted image, in pixels: Pillow's `Image.MAX_IMAGE_PIXELS` (its decompression-bomb
/// limit, ~256 MB of RGB). Checked from the header, before anything is allocated.
pub const MAX_PIXELS: usize = 89_478_485;

/// Errors for a header's size beyond [`MAX_SIDE`] or [`MAX_PIXELS`] (`what`: "JPEG", "PNG").
pub fn check_image_size(width: usize, height: usize, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        width <= MAX_SIDE && height <= MAX_SIDE,
        "{what} of {width}x{height} exceeds the {MAX_SIDE} px side limit"
    );
    anyhow::ensure!(
        width.saturating_mul(height) <= MAX_PIXELS,
        "{what} of {width}x{height} = {} pixels exceeds the {MAX_PIXELS}-pixel limit (Pillow's MAX_IMAGE_PIXELS)",
        width.saturating_mul(height)
    );
    Ok(())
}

/// Container format of an encoded image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

/// Detects the format from the magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// Decodes a JPEG or PNG held in memory to 8-bit RGB.
pub fn decode(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    match sniff(bytes) {
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes),
        Some(ImageFormat::Png) => decode_png(bytes),
        None => bail!(
            "not a JPEG or PNG image ({} bytes, starts with {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ),
    }
}

/// Decodes a JPEG to RGB; errors on truncated or corrupt streams.
pub fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    ensure_jpeg_complete(bytes)?;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| anyhow::anyhow!("corrupt JPEG header: {e:?}"))?;
    if let Some(info) = decoder.info() {
        check_image_size(info.width as usize, info.height as usize, "JPEG")?;
    }
    let data = decoder
        .decode()
        .map_err(|e| anyhow::anyhow!("corrupt JPEG: {e:?}"))?;
    let info = decoder
        .info()
        .context("JPEG decoder returned no image info")?;
    let (w, h) = (info.width as usize, info.height as usize);
    anyhow::ensure!(
        data.len() == w * h * 3,
        "JPEG decoder produced {} bytes for a {w}x{h} RGB image (colorspace {:?})",
        data.len(),
        decoder.output_colorspace()
    );
    RgbImage::new(w, h, data)
}

/// Decodes the whole image with every decoder the data path may use on it (for `maxsup data
/// check`): a JPEG within `maxsup-jpeg`'s scope must decode completely with it (training crops
/// decode only their region, so damage elsewhere would pass or fail by chance) and with the
/// general decoder; other JPEGs and PNGs with [`decode`].
pub fn verify(bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(_info) = jpeg_region_info(bytes)? {
        match maxsup_jpeg::decode(bytes) {
            Ok(_) | Err(JpegError::Unsupported(_)) => {}
            Err(e) => bail!("corrupt JPEG: {e}"),
        }
    }
    decode(bytes).map(|_| ())
}

/// Header of a JPEG that [`decode_jpeg_crop`] can decode region-wise; `None` for PNG and for JPEG
/// variants outside `maxsup-jpeg`'s scope (those are decoded whole). Errors on truncated or
/// malformed headers, like [`decode`].
pub fn jpeg_region_info(bytes: &[u8]) -> anyhow::Result<Option<maxsup_jpeg::ImageInfo>> {
    if sniff(bytes) != Some(ImageFormat::Jpeg) {
        return Ok(None);
    }
    ensure_jpeg_complete(bytes)?;
    match maxsup_jpeg::read_info(bytes) {
        Ok(info) => {
            check_image_size(info.width, info.height, "JPEG")?;
            Ok(Some(info))
        }
        Err(JpegError::Unsupported(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Decodes the pixels of `crop` (full-resolution coordinates) that a resize to `out_w x out_h`
/// needs: only the blocks under the crop, and at 1/2, 1/4 or 1/8 scale in the DCT domain when the
/// crop is at least that many times larger than the output on both axes (the scaled crop is then
/// still at least the output size, so the resize only ever shrinks). The returned image is the
/// crop, at that scale, with edges rounded outward to whole scaled pixels.
pub fn decode_jpeg_crop(
    bytes: &[u8],
    info: &maxsup_jpeg::ImageInfo,
    crop: Rect,
    out_w: usize,
    out_h: usize,
) -> anyhow::Result<RgbImage> {
    let denom = [8, 4, 2]
        .into_iter()
        .find(|&d| crop.width >= out_w * d && crop.height >= out_h * d)
        .unwrap_or(1);
    let (sw, sh) = maxsup_jpeg::scaled_size(info.width, info.height, denom);
    let x0 = crop.x / denom;
    let y0 = crop.y / denom;
    let x1 = (crop.x + crop.width).div_ceil(denom).min(sw);
    let y1 = (crop.y + crop.height).div_ceil(denom).min(sh);
    let region = maxsup_jpeg::Region {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    };
    match maxsup_jpeg::decode_region(bytes, denom, region) {
        Ok(rgb) => RgbImage::new(rgb.width, rgb.height, rgb.data),
        Err(JpegError::Unsupported(_)) => {
            // A feature found past the header (e.g. a second frame): decode whole, then crop.
            let full = decode_jpeg(bytes)?;
            let mut data = Vec::with_capacity(crop.width * crop.height * 3);
            for y in crop.y..crop.y + crop.height {
                let row = (y * full.width + crop.x) * 3;
                data.extend_from_slice(&full.data[row..row + crop.width * 3]);
            }
            RgbImage::new(crop.width, crop.height, data)
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Rejects JPEG streams cut short: the last scan (SOS, `FF DA`) must be followed by an end-of-image
/// marker (`FF D9`). The decoder itself pads a stream that ends inside the last MCU row with zero bits,
/// which would silently produce gray pixels. Neither marker can occur inside entropy-coded data
/// (0xFF is byte-stuffed), so the check is exact; scanning from the end keeps it O(trailing bytes).
fn ensure_jpeg_complete(bytes: &[u8]) -> anyhow::Result<()> {
    let eoi = bytes
        .windows(2)
        .rposition(|w| w == [0xFF, 0xD9])
        .unwrap_or(0);
    if bytes[eoi..].windows(2).any(|w| w == [0xFF, 0xDA]) {
        bail!(
            "truncated JPEG: no end-of-image marker after the last scan ({} bytes)",
            bytes.len()
        );
    }
    Ok(())
}

/// Decodes a PNG to RGB (16-bit reduced to 8, palettes expanded, alpha dropped).
pub fn decode_png(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| anyhow::anyhow!("corrupt PNG header: {e}"))?;
    // Checked before the frame buffer is allocated: the header alone can claim gigabytes.
    check_image_size(
        reader.info().width as usize,
        reader.info().height as usize,
        "PNG",
    )?;
    let buf_size = reader.output_buffer_size().context("PNG image too large")?;
    let mut buf = vec![0u8; buf_size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| anyhow::anyhow!("corrupt PNG data: {e}"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    anyhow::ensure!(
        w <= MAX_SIDE && h <= MAX_SIDE,
        "PNG of {w}x{h} exceeds the {MAX_SIDE} px limit"
    );
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("PNG palette was not expanded"),
    };
    let stride = info.line_size;
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let row = &buf[y * stride..y * stride + w * channels];
        for px in row.chunks_exact(channels) {
            match channels {
                1 | 2 => data.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => data.extend_from_slice(&px[..3]),
            }
        }
    }
    RgbImage::new(w, h, data)
}
