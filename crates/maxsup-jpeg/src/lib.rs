//! JPEG decoding of a region of the image, optionally at 1/2, 1/4 or 1/8 scale in the DCT domain.
//!
//! Training pipelines crop before they resize (RandomResizedCrop keeps 8-100% of the area, then
//! shrinks it to 224 px), so most of a full decode is thrown away. This decoder does only what the
//! crop needs: entropy decoding stops after the last block row the region touches (every scan of
//! a progressive file, too), only the blocks inside the region are inverse-transformed, and when
//! the crop will be shrunk by 2x or more the inverse DCT produces the smaller image directly.
//!
//! Scope: Huffman-coded 8-bit baseline, extended and progressive JPEG with 1 (grayscale) or 3
//! (YCbCr, or RGB per Adobe's marker) components, any sampling factors, restart intervals. Other
//! streams (arithmetic coding, lossless, 12-bit, CMYK) return [`JpegError::Unsupported`] so the
//! caller can use a general decoder. Data after the region's last block row is not read, so damage
//! there goes unnoticed; everything the region depends on is checked.

// Index loops over fixed-size rows are kept: they are what the compiler vectorizes.
#![allow(clippy::needless_range_loop)]

mod bits;
mod blocks;
mod cpu;
mod error;
mod frame;
mod huffman;
mod idct;
mod output;
mod pool;
mod scan;

pub use error::JpegError;
pub use frame::{ImageInfo, MAX_SIDE};
pub use output::Region;

use error::{corrupt, unsupported};
use frame::{be16, Frame, Tables};
use output::ColorModel;

/// Reads the frame header (size, components, progressive) without decoding.
pub fn read_info(data: &[u8]) -> Result<ImageInfo, JpegError> {
    let mut tables = Tables::new();
    let (frame, _) = parse_until_frame(data, &mut tables)?;
    Ok(frame.info())
}

/// Size of the image decoded at `1/denom` scale: each side rounded up, like libjpeg.
pub fn scaled_size(width: usize, height: usize, denom: usize) -> (usize, usize) {
    (width.div_ceil(denom), height.div_ceil(denom))
}

/// An 8-bit RGB image: `width * height * 3` bytes, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Decodes `region` of the image scaled by `1/denom` (denom 1, 2, 4 or 8); the region is in
/// coordinates of the scaled image (see [`scaled_size`]).
pub fn decode_region(data: &[u8], denom: usize, region: Region) -> Result<Rgb, JpegError> {
    if !matches!(denom, 1 | 2 | 4 | 8) {
        return unsupported(format!("scale 1/{denom} (only 1, 1/2, 1/4, 1/8)"));
    }
    #[cfg(target_arch = "x86_64")]
    if vector_features() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe {
            if cpu::fast_pdep() {
                decode_region_avx2::<true>(data, denom, region)
            } else {
                decode_region_avx2::<false>(data, denom, region)
            }
        };
    }
    decode_region_impl::<false>(data, denom, region, false)
}

/// Decodes the whole image at full scale.
pub fn decode(data: &[u8]) -> Result<Rgb, JpegError> {
    let info = read_info(data)?;
    decode_region(
        data,
        1,
        Region {
            x: 0,
            y: 0,
            width: info.width,
            height: info.height,
        },
    )
}

/// Whether the CPU has what [`decode_region_avx2`] is compiled for.
#[cfg(target_arch = "x86_64")]
fn vector_features() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("lzcnt")
        && std::arch::is_x86_feature_detected!("popcnt")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn decode_region_avx2<const PDEP: bool>(
    data: &[u8],
    denom: usize,
    region: Region,
) -> Result<Rgb, JpegError> {
    decode_region_impl::<PDEP>(data, denom, region, true)
}

/// Walks segments up to and including the frame header; returns the frame and the offset after it.
fn parse_until_frame(data: &[u8], tables: &mut Tables) -> Result<(Frame, usize), JpegError> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return corrupt("missing start-of-image marker");
    }
    let mut pos = 2;
    loop {
        let (marker, seg, next) = segment(data, pos)?;
        match marker {
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Ok((frame::parse_sof(marker, seg)?, next));
            }
            0xDA => return corrupt("scan before the frame header"),
            0xD9 => return corrupt("end of image before the frame header"),
            _ => apply_table_segment(marker, seg, tables)?,
        }
        pos = next;
    }
}

/// The marker at `pos` (after any fill bytes), its payload, and the offset after it.
fn segment(data: &[u8], mut pos: usize) -> Result<(u8, &[u8], usize), JpegError> {
    while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
        pos += 1;
    }
    match data.get(pos..pos + 2) {
        Some([0xFF, m]) => {
            let m = *m;
            if m == 0xD9 || (0xD0..=0xD7).contains(&m) || m == 0x01 {
                return Ok((m, &[], pos + 2));
            }
            let len = be16(data, pos + 2)?;
            match data.get(pos + 4..pos + 2 + len) {
                Some(seg) if len >= 2 => Ok((m, seg, pos + 2 + len)),
                _ => corrupt(format!(
                    "marker 0xFF{m:02X} segment runs past the end of the data"
                )),
            }
        }
        Some(_) => corrupt(format!("expected a marker at byte {pos}")),
        None => corrupt("data ends before the end-of-image marker"),
    }
}

fn apply_table_segment(marker: u8, seg: &[u8], tables: &mut Tables) -> Result<(), JpegError> {
    match marker {
        0xDB => frame::parse_dqt(seg, tables),
        0xC4 => frame::parse_dht(seg, tables),
        0xDD => {
            tables.restart_interval = be16(seg, 0)?;
            Ok(())
        }
        0xEE => {
            frame::parse_app14(seg, tables);
            Ok(())
        }
        0xCC => unsupported("arithmetic-coded JPEG"),
        _ => Ok(()), // APPn, COM, DNL and others carry nothing the pixels depend on.
    }
}

/// `avx2`: the caller checked AVX2 and FMA support (selects the vector inverse DCT). `PDEP`: the
/// caller checked that BMI2's `pdep` is available and fast, and runs with BMI2 enabled. Each
/// variant is a separate instantiation: one with both refinement paths measured slower.
#[inline(always)]
fn decode_region_impl<const PDEP: bool>(
    data: &[u8],
    denom: usize,
    region: Region,
    avx2: bool,
) -> Result<Rgb, JpegError> {
    let mut tables = Tables::new();
    let (mut frame, mut pos) = parse_until_frame(data, &mut tables)?;
    let (sw, sh) = scaled_size(frame.width, frame.height, denom);
    if region.width == 0
        || region.height == 0
        || region.x + region.width > sw
        || region.y + region.height > sh
    {
        return unsupported(format!(
            "region {}x{} at ({}, {}) outside the {sw}x{sh} image",
            region.width, region.height, region.x, region.y
        ));
    }
    let model = match frame.components.len() {
        1 => ColorModel::Gray,
        _ => match tables.adobe_transform {
            Some(0) => ColorModel::Rgb,
            Some(_) => ColorModel::YCbCr,
            None if frame.components.iter().map(|c| c.id).eq(*b"RGB") => ColorModel::Rgb,
            None => ColorModel::YCbCr,
        },
    };
    let plans = output::plan_components(&frame, denom, region);
    let needed: Vec<output::BlockRange> = plans.iter().map(|p| p.blocks).collect();
    frame.allocate();
    let mut scans = 0;
    loop {
        let (marker, seg, next) = segment(data, pos)?;
        match marker {
            0xDA => {
                pos = scan::decode_scan::<PDEP>(data, pos, &mut frame, &tables, &needed)?;
                scans += 1;
                continue;
            }
            0xD9 => break,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return corrupt("second frame header");
            }
            _ => apply_table_segment(marker, seg, &mut tables)?,
        }
        pos = next;
    }
    if scans == 0 {
        return corrupt("no scan in the image");
    }
    Ok(Rgb {
        width: region.width,
        height: region.height,
        data: output::render(&frame, &tables, model, plans, region, avx2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code path (portable; AVX2 with and without `pdep`, where the CPU has them) decodes
    /// the progressive and baseline fixtures to the same bytes, whole and in a region.
    #[test]
    fn all_decoder_variants_agree() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        for name in [
            "progressive_420",
            "progressive_444",
            "gray_progressive",
            "baseline_420",
        ] {
            let data = std::fs::read(format!("{dir}/{name}.jpg")).unwrap();
            let info = read_info(&data).unwrap();
            let regions = [
                Region {
                    x: 0,
                    y: 0,
                    width: info.width,
                    height: info.height,
                },
                Region {
                    x: 9,
                    y: 13,
                    width: 40,
                    height: 30,
                },
            ];
            for region in regions {
                let portable = decode_region_impl::<false>(&data, 1, region, false).unwrap();
                #[cfg(target_arch = "x86_64")]
                if vector_features() {
                    // SAFETY: features checked just above.
                    let (a, b) = unsafe {
                        (
                            decode_region_avx2::<false>(&data, 1, region).unwrap(),
                            decode_region_avx2::<true>(&data, 1, region).unwrap(),
                        )
                    };
                    assert_eq!(a.data, b.data, "{name} {region:?}: pdep changes the pixels");
                    // The vector IDCT may round differently from the portable one by a level.
                    let worst = a
                        .data
                        .iter()
                        .zip(&portable.data)
                        .map(|(x, y)| x.abs_diff(*y))
                        .max();
                    assert!(
                        worst <= Some(1),
                        "{name} {region:?}: AVX2 vs portable {worst:?}"
                    );
                }
                assert_eq!(portable.data.len(), region.width * region.height * 3);
            }
        }
    }
}
