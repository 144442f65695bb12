//! 8-bit photometric primitives with Pillow's exact arithmetic, because timm's RandAugment and
//! torchvision's ColorJitter are defined as calls into Pillow (`ImageOps`, `ImageEnhance`,
//! `Image.blend`). Matching Pillow's integer rounding keeps our augmented images within a level of
//! what the PyTorch recipe trains on (checked against fixtures made with Pillow).

use crate::image::RgbImage;

/// Applies one 256-entry lookup table to every channel (Pillow `Image.point` / `ImageOps._lut`).
pub fn apply_lut(img: &RgbImage, lut: &[u8; 256]) -> RgbImage {
    let data = img.data.iter().map(|&v| lut[v as usize]).collect();
    RgbImage {
        width: img.width,
        height: img.height,
        data,
    }
}

/// Applies a separate lookup table per channel.
fn apply_channel_luts(img: &RgbImage, luts: &[[u8; 256]; 3]) -> RgbImage {
    let mut data = img.data.clone();
    for px in data.chunks_exact_mut(3) {
        for c in 0..3 {
            px[c] = luts[c][px[c] as usize];
        }
    }
    RgbImage {
        width: img.width,
        height: img.height,
        data,
    }
}

fn lut_from(f: impl Fn(usize) -> u8) -> [u8; 256] {
    std::array::from_fn(f)
}

/// `ImageOps.invert`.
pub fn invert(img: &RgbImage) -> RgbImage {
    apply_lut(img, &lut_from(|i| 255 - i as u8))
}

/// `ImageOps.posterize`: keep the `bits` most significant bits. `bits == 0` gives black, as Pillow
/// did when timm 0.4.12 (DeiT) was current; recent Pillow raises instead. `bits >= 8` is the identity
/// (timm's guard).
pub fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    if bits >= 8 {
        return img.clone();
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    apply_lut(img, &lut_from(|i| i as u8 & mask))
}

/// `ImageOps.solarize`: invert values `>= threshold` (threshold 256 is the identity).
pub fn solarize(img: &RgbImage, threshold: u32) -> RgbImage {
    apply_lut(
        img,
        &lut_from(|i| {
            if (i as u32) < threshold {
                i as u8
            } else {
                255 - i as u8
            }
        }),
    )
}

/// timm `solarize_add`: add `add` (saturating) to values below `threshold`.
pub fn solarize_add(img: &RgbImage, add: u32, threshold: u32) -> RgbImage {
    apply_lut(
        img,
        &lut_from(|i| {
            if (i as u32) < threshold {
                (i as u32 + add).min(255) as u8
            } else {
                i as u8
            }
        }),
    )
}

fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for px in img.data.chunks_exact(3) {
        for c in 0..3 {
            h[c][px[c] as usize] += 1;
        }
    }
    h
}

/// `ImageOps.autocontrast()` (no cutoff): stretch each channel's [min, max] to [0, 255].
pub fn autocontrast(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let luts = std::array::from_fn(|c| {
        let h = &hist[c];
        let lo = (0..256).find(|&i| h[i] > 0).unwrap_or(0);
        let hi = (0..256).rev().find(|&i| h[i] > 0).unwrap_or(0);
        if hi <= lo {
            return lut_from(|i| i as u8);
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        // Python's int() truncates toward zero, then the value is clamped.
        lut_from(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
    });
    apply_channel_luts(img, &luts)
}

/// `ImageOps.equalize()`: per-channel histogram equalization with Pillow's integer steps.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let luts = std::array::from_fn(|c| {
        let h = &hist[c];
        let nonzero: Vec<u64> = h.iter().copied().filter(|&v| v > 0).collect();
        if nonzero.len() <= 1 {
            return lut_from(|i| i as u8);
        }
        let step = (nonzero.iter().sum::<u64>() - nonzero[nonzero.len() - 1]) / 255;
        if step == 0 {
            return lut_from(|i| i as u8);
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for i in 0..256 {
            lut[i] = (n / step).min(255) as u8;
            n += h[i];
        }
        lut
    });
    apply_channel_luts(img, &luts)
}

/// Pillow's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded).
#[inline]
pub fn luma(px: &[u8]) -> u8 {
    ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(a, b, alpha)` = `a + alpha * (b - a)` in `f32`, truncated toward zero (and clamped
/// when extrapolating), exactly as Pillow's C code.
pub fn blend(a: &RgbImage, b: &RgbImage, alpha: f64) -> RgbImage {
    debug_assert_eq!(a.data.len(), b.data.len());
    if alpha == 0.0 {
        return a.clone();
    }
    if alpha == 1.0 {
        return b.clone();
    }
    let alpha = alpha as f32;
    let data = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let t = x as f32 + alpha * (y as i32 - x as i32) as f32;
            if t <= 0.0 {
                0
            } else if t >= 255.0 {
                255
            } else {
                t as u8
            }
        })
        .collect();
    RgbImage {
        width: a.width,
        height: a.height,
        data,
    }
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend with the grayscale image (saturation).
pub fn enhance_color(img: &RgbImage, factor: f64) -> RgbImage {
    let mut gray = img.data.clone();
    for px in gray.chunks_exact_mut(3) {
        let l = luma(px);
        px.copy_from_slice(&[l, l, l]);
    }
    blend(
        &RgbImage {
            width: img.width,
            height: img.height,
            data: gray,
        },
        img,
        factor,
    )
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with a flat image at the rounded mean luma.
pub fn enhance_contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let n = (img.width * img.height).max(1) as f64;
    let sum: u64 = img.data.chunks_exact(3).map(|px| luma(px) as u64).sum();
    let mean = (sum as f64 / n + 0.5) as u8;
    let flat = RgbImage {
        width: img.width,
        height: img.height,
        data: vec![mean; img.data.len()],
    };
    blend(&flat, img, factor)
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black.
pub fn enhance_brightness(img: &RgbImage, factor: f64) -> RgbImage {
    let black = RgbImage {
        width: img.width,
        height: img.height,
        data: vec![0; img.data.len()],
    };
    blend(&black, img, factor)
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`: blend with `ImageFilter.SMOOTH` (3x3 kernel
/// 1 1 1 / 1 5 1 / 1 1 1, divided by 13; border pixels copied unchanged, as Pillow's filter does).
pub fn enhance_sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(&smooth(img), img, factor)
}

/// Pillow `ImageFilter.SMOOTH`.
pub fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut out = img.data.clone();
    if w < 3 || h < 3 {
        return img.clone();
    }
    let k = [1.0f32 / 13.0, 5.0f32 / 13.0];
    let stride = w * 3;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| img.data[yy * stride + xx * 3 + c] as f32;
                // Pillow sums the row below first, then the centre row, then the row above.
                let mut ss = 0.5f32;
                for yy in [y + 1, y, y - 1] {
                    for xx in [x - 1, x, x + 1] {
                        let wk = if yy == y && xx == x { k[1] } else { k[0] };
                        ss += at(yy, xx) * wk;
                    }
                }
                out[y * stride + x * 3 + c] = if ss <= 0.0 {
                    0
                } else if ss >= 255.0 {
                    255
                } else {
                    ss as u8
                };
            }
        }
    }
    RgbImage {
        width: w,
        height: h,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luts_follow_pillow_definitions() {
        let img = RgbImage::new(2, 1, vec![0, 100, 200, 255, 128, 127]).unwrap();
        assert_eq!(invert(&img).data, vec![255, 155, 55, 0, 127, 128]);
        assert_eq!(posterize(&img, 1).data, vec![0, 0, 128, 128, 128, 0]);
        assert_eq!(posterize(&img, 0).data, vec![0; 6]);
        assert_eq!(solarize(&img, 128).data, vec![0, 100, 55, 0, 127, 127]);
        assert_eq!(
            solarize_add(&img, 100, 128).data,
            vec![100, 200, 200, 255, 128, 227]
        );
    }

    #[test]
    fn blend_truncates_and_clamps() {
        let a = RgbImage::new(1, 1, vec![10, 10, 200]).unwrap();
        let b = RgbImage::new(1, 1, vec![13, 0, 250]).unwrap();
        assert_eq!(blend(&a, &b, 0.5).data, vec![11, 5, 225]);
        assert_eq!(blend(&a, &b, 1.9).data, vec![15, 0, 255]);
    }
}
