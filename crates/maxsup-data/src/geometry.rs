//! Geometric transforms that take a source image to the network's input size: the torchvision
//! parameter sampling (RandomResizedCrop, Resize + CenterCrop, padded RandomCrop) and their execution
//! through one fused resample (no intermediate full-size images).

use crate::image::RgbImage;
use crate::resample::{resample, Interpolation, Rect};
use crate::rng::Rng;

/// How a source image becomes a `size x size` image.
#[derive(Clone, Debug, PartialEq)]
pub enum Geometry {
    /// The image must already be `size x size` (e.g. CIFAR evaluation).
    Identity { size: usize },
    /// Zero-pad every side by `padding`, then take a random `size x size` crop
    /// (torchvision `RandomCrop(size, padding)`, the CIFAR recipe).
    PadRandomCrop { size: usize, padding: usize },
    /// torchvision `RandomResizedCrop(size, scale, ratio, interpolation)`.
    RandomResizedCrop {
        size: usize,
        scale: (f64, f64),
        ratio: (f64, f64),
        interpolation: Interpolation,
    },
    /// torchvision `Resize(resize)` (shorter side) followed by `CenterCrop(crop)`.
    ResizeCenterCrop {
        resize: usize,
        crop: usize,
        interpolation: Interpolation,
    },
}

impl Geometry {
    /// Side of the output image.
    pub fn output_size(&self) -> usize {
        match *self {
            Geometry::Identity { size }
            | Geometry::PadRandomCrop { size, .. }
            | Geometry::RandomResizedCrop { size, .. } => size,
            Geometry::ResizeCenterCrop { crop, .. } => crop,
        }
    }

    /// Applies the transform, then mirrors horizontally when `flip` (flip after crop, as torchvision).
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng, flip: bool) -> anyhow::Result<RgbImage> {
        anyhow::ensure!(
            img.width > 0 && img.height > 0,
            "empty image ({}x{})",
            img.width,
            img.height
        );
        match *self {
            Geometry::Identity { size } => {
                anyhow::ensure!(
                    img.width == size && img.height == size,
                    "expected a {size}x{size} image, got {}x{}",
                    img.width,
                    img.height
                );
                Ok(if flip { mirror(img) } else { img.clone() })
            }
            Geometry::PadRandomCrop { size, padding } => {
                Ok(pad_random_crop(img, size, padding, rng, flip))
            }
            Geometry::RandomResizedCrop {
                size,
                scale,
                ratio,
                interpolation,
            } => {
                let crop = random_resized_crop_params(img.width, img.height, scale, ratio, rng);
                let full = Rect::sized(size, size);
                Ok(resample(img, crop, size, size, full, interpolation, flip))
            }
            Geometry::ResizeCenterCrop {
                resize,
                crop,
                interpolation,
            } => {
                let ((w, h), window) =
                    resize_center_crop_plan(img.width, img.height, resize, crop)?;
                let src = Rect::sized(img.width, img.height);
                Ok(resample(img, src, w, h, window, interpolation, flip))
            }
        }
    }
}

/// Mirror an image left-right.
pub fn mirror(img: &RgbImage) -> RgbImage {
    let mut data = Vec::with_capacity(img.data.len());
    for row in img.data.chunks_exact(img.width * 3) {
        for px in row.chunks_exact(3).rev() {
            data.extend_from_slice(px);
        }
    }
    RgbImage {
        width: img.width,
        height: img.height,
        data,
    }
}

fn pad_random_crop(
    img: &RgbImage,
    size: usize,
    padding: usize,
    rng: &mut Rng,
    flip: bool,
) -> RgbImage {
    let (pw, ph) = (img.width + 2 * padding, img.height + 2 * padding);
    // torchvision: i = randint(0, h - th + 1), j = randint(0, w - tw + 1); top first.
    let top = rng.below((ph.saturating_sub(size) + 1) as u64) as usize;
    let left = rng.below((pw.saturating_sub(size) + 1) as u64) as usize;
    let mut data = vec![0u8; size * size * 3];
    for y in 0..size {
        let sy = (y + top) as isize - padding as isize;
        if sy < 0 || sy >= img.height as isize {
            continue;
        }
        for x in 0..size {
            let sx = (x + left) as isize - padding as isize;
            if sx < 0 || sx >= img.width as isize {
                continue;
            }
            let ox = if flip { size - 1 - x } else { x };
            let s = (sy as usize * img.width + sx as usize) * 3;
            data[(y * size + ox) * 3..(y * size + ox) * 3 + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage {
        width: size,
        height: size,
        data,
    }
}

/// torchvision `RandomResizedCrop.get_params`: up to 10 tries of (area fraction ~ U(scale),
/// log-aspect ~ U(log ratio)); a try succeeds when the rounded crop fits. Otherwise fall back to a
/// center crop of the whole image clamped to the ratio range.
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> Rect {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_range(scale.0, scale.1);
        let aspect = rng.uniform_range(log_lo, log_hi).exp();
        // Python's round() rounds half to even.
        let w = (target_area * aspect).sqrt().round_ties_even() as i64;
        let h = (target_area / aspect).sqrt().round_ties_even() as i64;
        if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
            let top = rng.below((height as i64 - h + 1) as u64) as usize;
            let left = rng.below((width as i64 - w + 1) as u64) as usize;
            return Rect {
                x: left,
                y: top,
                width: w as usize,
                height: h as usize,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0.min(ratio.1) {
        (
            width,
            ((width as f64 / ratio.0.min(ratio.1)).round_ties_even() as usize).max(1),
        )
    } else if in_ratio > ratio.0.max(ratio.1) {
        (
            ((height as f64 * ratio.0.max(ratio.1)).round_ties_even() as usize).max(1),
            height,
        )
    } else {
        (width, height)
    };
    Rect {
        x: (width - w) / 2,
        y: (height - h) / 2,
        width: w,
        height: h,
    }
}

/// torchvision `Resize(int)`: the shorter side becomes `size`, the longer one `int(size * long / short)`.
pub fn shorter_side_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as usize)
    } else {
        ((size as f64 * width as f64 / height as f64) as usize, size)
    }
}

/// Resize + CenterCrop of a `width x height` image: the resized size and the crop window in it.
pub fn resize_center_crop_plan(
    width: usize,
    height: usize,
    resize: usize,
    crop: usize,
) -> anyhow::Result<((usize, usize), Rect)> {
    let (w, h) = shorter_side_size(width, height, resize);
    anyhow::ensure!(
        w >= crop && h >= crop,
        "resized image {w}x{h} is smaller than the center crop {crop}"
    );
    Ok(((w, h), center_crop_rect(w, h, crop)))
}

/// torchvision `CenterCrop`: offsets `int(round((dim - crop) / 2))`.
pub fn center_crop_rect(width: usize, height: usize, crop: usize) -> Rect {
    let top = ((height - crop) as f64 / 2.0).round_ties_even() as usize;
    let left = ((width - crop) as f64 / 2.0).round_ties_even() as usize;
    Rect {
        x: left,
        y: top,
        width: crop,
        height: crop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrc_crops_fit_and_respect_ranges() {
        let mut rng = Rng::from_seed(1);
        for _ in 0..2000 {
            let r = random_resized_crop_params(500, 375, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(r.x + r.width <= 500 && r.y + r.height <= 375);
            let frac = (r.width * r.height) as f64 / (500.0 * 375.0);
            assert!(frac > 0.07 && frac <= 1.0, "{frac}");
        }
    }

    #[test]
    fn rrc_fallback_is_center_crop_clamped_to_ratio() {
        // A 1000x10 strip can never fit a crop of ratio <= 4/3 with area >= 8%: fallback.
        let mut rng = Rng::from_seed(2);
        let r = random_resized_crop_params(1000, 10, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!(
            r,
            Rect {
                x: (1000 - 13) / 2,
                y: 0,
                width: 13,
                height: 10
            }
        );
        let r = random_resized_crop_params(10, 1000, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!(
            r,
            Rect {
                x: 0,
                y: (1000 - 13) / 2,
                width: 10,
                height: 13
            }
        );
    }

    #[test]
    fn resize_and_center_crop_follow_torchvision_rounding() {
        assert_eq!(shorter_side_size(500, 375, 256), (341, 256));
        assert_eq!(shorter_side_size(375, 500, 256), (256, 341));
        assert_eq!(
            center_crop_rect(341, 256, 224),
            Rect {
                x: 58,
                y: 16,
                width: 224,
                height: 224
            }
        );
        // (255 - 224) / 2 = 15.5 rounds to even: 16.
        assert_eq!(center_crop_rect(255, 224, 224).x, 16);
    }

    #[test]
    fn pad_crop_keeps_pixels_and_zero_border() {
        let data: Vec<u8> = (0..32 * 32 * 3).map(|i| (i % 251) as u8 + 1).collect();
        let img = RgbImage::new(32, 32, data).unwrap();
        let mut rng = Rng::from_seed(5);
        for _ in 0..50 {
            let mut probe = rng.clone();
            let top = probe.below(9) as isize - 4;
            let left = probe.below(9) as isize - 4;
            let out = pad_random_crop(&img, 32, 4, &mut rng, false);
            for (x, y) in [(0usize, 0usize), (31, 31), (10, 20)] {
                let (sx, sy) = (x as isize + left, y as isize + top);
                let expect = if (0..32).contains(&sx) && (0..32).contains(&sy) {
                    img.pixel(sx as usize, sy as usize)
                } else {
                    [0, 0, 0]
                };
                assert_eq!(out.pixel(x, y), expect);
            }
        }
    }
}
