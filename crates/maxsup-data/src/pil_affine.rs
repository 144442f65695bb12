//! Pillow's `Image.transform(size, AFFINE, ...)` and `Image.rotate`, as timm's RandAugment calls them
//! for Rotate / ShearX/Y / TranslateX/YRel: every output pixel centre is mapped into the source and
//! point-sampled with Pillow's bilinear or bicubic (cubic convolution with a = -1) filter; pixels that
//! land outside the source keep the fill colour. No antialiasing (the maps are near-isometries).

use crate::image::RgbImage;
use crate::resample::Interpolation;

/// Output-to-input map `(a, b, c, d, e, f)`: `x_in = a x + b y + c`, `y_in = d x + e y + f`, applied
/// to pixel centres (`x + 0.5`, `y + 0.5`).
pub type AffineMatrix = [f64; 6];

/// `Image.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=fill)`.
pub fn affine(img: &RgbImage, m: AffineMatrix, filter: Interpolation, fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = m[0] * xo + m[1] * yo + m[2];
            let yin = m[3] * xo + m[4] * yo + m[5];
            let px = if xin < 0.0 || xin >= w as f64 || yin < 0.0 || yin >= h as f64 {
                fill
            } else {
                match filter {
                    Interpolation::Bilinear => bilinear(img, xin - 0.5, yin - 0.5),
                    Interpolation::Bicubic => bicubic(img, xin - 0.5, yin - 0.5),
                }
            };
            data.extend_from_slice(&px);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

#[inline]
fn clip_index(v: i64, n: usize) -> usize {
    v.clamp(0, n as i64 - 1) as usize
}

#[inline]
fn sample(img: &RgbImage, x: usize, y: usize, c: usize) -> f64 {
    img.data[(y * img.width + x) * 3 + c] as f64
}

fn bilinear(img: &RgbImage, xin: f64, yin: f64) -> [u8; 3] {
    let (x, y) = (xin.floor() as i64, yin.floor() as i64);
    let (dx, dy) = (xin - x as f64, yin - y as f64);
    let (x0, x1) = (clip_index(x, img.width), clip_index(x + 1, img.width));
    let row0 = clip_index(y, img.height);
    let row1 = (y + 1 >= 0 && y + 1 < img.height as i64).then_some((y + 1) as usize);
    std::array::from_fn(|c| {
        let lerp = |a: f64, b: f64, d: f64| a + (b - a) * d;
        let v1 = lerp(sample(img, x0, row0, c), sample(img, x1, row0, c), dx);
        let v2 = row1.map_or(v1, |r| {
            lerp(sample(img, x0, r, c), sample(img, x1, r, c), dx)
        });
        lerp(v1, v2, dy) as u8
    })
}

/// Pillow's transform-time cubic: `p(d) = v2 + d(-v1 + v3) + d^2(2(v1 - v2) + v3 - v4) + d^3(-v1 + v2 - v3 + v4)`.
#[inline]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    v2 + d * (p2 + d * (p3 + d * p4))
}

fn bicubic(img: &RgbImage, xin: f64, yin: f64) -> [u8; 3] {
    let (x, y) = (xin.floor() as i64 - 1, yin.floor() as i64 - 1);
    let (dx, dy) = (xin - (x + 1) as f64, yin - (y + 1) as f64);
    let xs: [usize; 4] = std::array::from_fn(|k| clip_index(x + k as i64, img.width));
    let in_rows = |k: i64| y + k >= 0 && y + k < img.height as i64;
    std::array::from_fn(|c| {
        let row = |r: usize| {
            cubic(
                sample(img, xs[0], r, c),
                sample(img, xs[1], r, c),
                sample(img, xs[2], r, c),
                sample(img, xs[3], r, c),
                dx,
            )
        };
        // Rows outside the image repeat the previous row's value (the first row is clamped).
        let v1 = row(clip_index(y, img.height));
        let v2 = if in_rows(1) {
            row((y + 1) as usize)
        } else {
            v1
        };
        let v3 = if in_rows(2) {
            row((y + 2) as usize)
        } else {
            v2
        };
        let v4 = if in_rows(3) {
            row((y + 3) as usize)
        } else {
            v3
        };
        let v = cubic(v1, v2, v3, v4, dy);
        if v <= 0.0 {
            0
        } else if v >= 255.0 {
            255
        } else {
            v as u8
        }
    })
}

/// Python's `round(v, 15)`, as Pillow rounds the rotation matrix (so that e.g. cos 90 deg is 0).
fn round15(v: f64) -> f64 {
    (v * 1e15).round() / 1e15
}

/// `Image.rotate(degrees, resample, fillcolor=fill)` about the image centre, same canvas size
/// (counter-clockwise for positive angles).
pub fn rotate(img: &RgbImage, degrees: f64, filter: Interpolation, fill: [u8; 3]) -> RgbImage {
    let angle = degrees.rem_euclid(360.0);
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 || (img.width == img.height && (angle == 90.0 || angle == 270.0)) {
        return rotate_exact(img, angle as u32);
    }
    let rad = -angle.to_radians();
    let (cos, sin) = (round15(rad.cos()), round15(rad.sin()));
    let (cx, cy) = (img.width as f64 / 2.0, img.height as f64 / 2.0);
    let m = [
        cos,
        sin,
        cos * -cx + sin * -cy + cx,
        -sin,
        cos,
        -sin * -cx + cos * -cy + cy,
    ];
    affine(img, m, filter, fill)
}

/// Pillow's transposes for the exact quarter turns (square images only for 90/270).
fn rotate_exact(img: &RgbImage, angle: u32) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = match angle {
                180 => (w - 1 - x, h - 1 - y),
                90 => (w - 1 - y, x),
                _ => (y, h - 1 - x),
            };
            data.extend_from_slice(&img.pixel(sx, sy));
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> RgbImage {
        let data = (0..6 * 4).flat_map(|i| [(i * 10) as u8, 50, 200]).collect();
        RgbImage::new(6, 4, data).unwrap()
    }

    #[test]
    fn identity_and_integer_shift_are_exact() {
        let img = ramp();
        for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
            assert_eq!(
                affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], f, [1, 2, 3]),
                img
            );
            let shifted = affine(&img, [1.0, 0.0, 2.0, 0.0, 1.0, 0.0], f, [1, 2, 3]);
            assert_eq!(shifted.pixel(0, 1), img.pixel(2, 1));
            assert_eq!(shifted.pixel(4, 2), [1, 2, 3]);
        }
    }

    #[test]
    fn square_quarter_turn_is_a_transpose() {
        let data = (0..9).flat_map(|i| [i as u8, 0, 0]).collect();
        let img = RgbImage::new(3, 3, data).unwrap();
        let r = rotate(&img, 90.0, Interpolation::Bicubic, [0; 3]);
        // Counter-clockwise: the top-right pixel moves to the top-left.
        assert_eq!(r.pixel(0, 0), img.pixel(2, 0));
        assert_eq!(rotate(&r, 270.0, Interpolation::Bicubic, [0; 3]), img);
    }
}
