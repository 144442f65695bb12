//! Separable, antialiased resampling of an image region, with the same coefficients as Pillow's
//! `Image.resize` (which torchvision calls on PIL images): when shrinking, the filter support widens
//! by the scale factor, so downscaling averages all covered pixels instead of aliasing.
//!
//! Like Pillow, the horizontal pass is rounded to 8 bits before the vertical pass, and the result is
//! 8-bit; our weights are `f32` rather than Pillow's fixed point, so values can differ by one level.

use crate::image::RgbImage;

/// Resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Triangle filter, support 1 (PIL `BILINEAR`, torchvision's default).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (PIL `BICUBIC`, DeiT's `--train-interpolation bicubic`).
    Bicubic,
}

impl Interpolation {
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => (1.0 - x).max(0.0),
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// A rectangle in pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Filter taps of one axis: for output i, source pixels `start[i] .. start[i] + taps` with weights
/// `weights[i * taps ..]` (zero-padded to a common tap count).
struct AxisTaps {
    start: Vec<usize>,
    /// Non-zero taps of each output (at most `taps`), so loops skip the padding.
    count: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

/// Pillow's `precompute_coeffs` for a source span of `in_len` pixels (offset `in_offset` in the
/// image) resized to `out_full` pixels, restricted to the outputs in `out_range`.
fn axis_taps(
    in_offset: usize,
    in_len: usize,
    out_full: usize,
    out_range: std::ops::Range<usize>,
    filter: Interpolation,
) -> AxisTaps {
    let scale = in_len as f64 / out_full as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let taps = (support.ceil() as usize) * 2 + 1;
    let mut start = Vec::with_capacity(out_range.len());
    let mut count = Vec::with_capacity(out_range.len());
    let mut weights = vec![0f32; out_range.len() * taps];
    let mut w = Vec::with_capacity(taps);
    for (k, i) in out_range.enumerate() {
        let center = (i as f64 + 0.5) * scale;
        // `as i64` truncates toward zero exactly like Pillow's `(int)` cast.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
        w.clear();
        let mut total = 0.0;
        for x in lo..hi {
            let v = filter.weight((x as f64 - center + 0.5) / filter_scale);
            w.push(v);
            total += v;
        }
        for (j, v) in w.iter().enumerate().take(taps) {
            weights[k * taps + j] = if total != 0.0 {
                (v / total) as f32
            } else {
                0.0
            };
        }
        start.push(in_offset + lo);
        count.push(w.len().min(taps));
    }
    AxisTaps {
        start,
        count,
        taps,
        weights,
    }
}

/// Rounds half up and clamps to 8 bits. `(v + 0.5) as u8` instead of `f32::round`: without SSE4.1
/// `round` is a libm call, and this runs for every intermediate and output value (it was a third of
/// the transform's time).
#[inline]
fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

/// Resizes `src_rect` of `img` to `out_w x out_h` and returns the window `window` of that resized
/// image (e.g. the whole output for RandomResizedCrop, or a center crop of a shorter-side resize).
/// `flip` mirrors the result horizontally (cheaper than a separate pass).
pub fn resample(
    img: &RgbImage,
    src_rect: Rect,
    out_w: usize,
    out_h: usize,
    window: Rect,
    filter: Interpolation,
    flip: bool,
) -> RgbImage {
    debug_assert!(
        src_rect.x + src_rect.width <= img.width && src_rect.y + src_rect.height <= img.height
    );
    debug_assert!(window.x + window.width <= out_w && window.y + window.height <= out_h);
    let hx = axis_taps(
        src_rect.x,
        src_rect.width,
        out_w,
        window.x..window.x + window.width,
        filter,
    );
    let vy = axis_taps(
        src_rect.y,
        src_rect.height,
        out_h,
        window.y..window.y + window.height,
        filter,
    );

    // Rows of the source that the vertical pass touches.
    let row_lo = vy.start.iter().copied().min().unwrap_or(0);
    let row_hi = vy
        .start
        .iter()
        .map(|&s| (s + vy.taps).min(src_rect.y + src_rect.height))
        .max()
        .unwrap_or(row_lo);
    let ow = window.width;
    let row_limit_x = src_rect.x + src_rect.width;

    // Horizontal pass: rows row_lo..row_hi, ow pixels each.
    let mut tmp = vec![0u8; (row_hi - row_lo) * ow * 3];
    for (r, y) in (row_lo..row_hi).enumerate() {
        let src_row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let dst_row = &mut tmp[r * ow * 3..(r + 1) * ow * 3];
        for i in 0..ow {
            let s = hx.start[i];
            let n = hx.count[i].min(row_limit_x - s);
            let w = &hx.weights[i * hx.taps..i * hx.taps + n];
            let px = &src_row[s * 3..(s + n) * 3];
            let (mut a, mut b, mut c) = (0f32, 0f32, 0f32);
            for (&wk, p) in w.iter().zip(px.chunks_exact(3)) {
                a += wk * p[0] as f32;
                b += wk * p[1] as f32;
                c += wk * p[2] as f32;
            }
            let o = if flip { ow - 1 - i } else { i };
            dst_row[3 * o] = to_u8(a);
            dst_row[3 * o + 1] = to_u8(b);
            dst_row[3 * o + 2] = to_u8(c);
        }
    }

    // Vertical pass.
    let oh = window.height;
    let row_limit_y = src_rect.y + src_rect.height;
    let mut out = vec![0u8; oh * ow * 3];
    let mut acc = vec![0f32; ow * 3];
    for j in 0..oh {
        let s = vy.start[j];
        let n = vy.count[j].min(row_limit_y - s);
        acc.iter_mut().for_each(|v| *v = 0.0);
        for k in 0..n {
            let wk = vy.weights[j * vy.taps + k];
            if wk == 0.0 {
                continue;
            }
            let row = &tmp[(s + k - row_lo) * ow * 3..(s + k - row_lo + 1) * ow * 3];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += wk * p as f32;
            }
        }
        for (o, &a) in out[j * ow * 3..(j + 1) * ow * 3].iter_mut().zip(&acc) {
            *o = to_u8(a);
        }
    }
    RgbImage {
        width: ow,
        height: oh,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 77]);
            }
        }
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn identity_size_is_exact() {
        let img = gradient(17, 9);
        for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let full = Rect {
                x: 0,
                y: 0,
                width: 17,
                height: 9,
            };
            let out = resample(&img, full, 17, 9, full, f, false);
            assert_eq!(out, img);
        }
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // Bilinear 2x shrink in Pillow = mean of each 2x2 block (weights 1/4,1/4 and 1/8 beyond).
        let data: Vec<u8> = (0..16).flat_map(|i| [i as u8 * 10, 0, 255]).collect();
        let img = RgbImage::new(4, 4, data).unwrap();
        let full = Rect {
            x: 0,
            y: 0,
            width: 4,
            height: 4,
        };
        let out = resample(
            &img,
            full,
            2,
            2,
            Rect {
                x: 0,
                y: 0,
                width: 2,
                height: 2,
            },
            Interpolation::Bilinear,
            false,
        );
        assert_eq!(out.pixel(0, 0)[2], 255);
        assert_eq!(out.pixel(0, 0)[1], 0);
        // Constant channels stay constant; the ramp is smoothed monotonically.
        assert!(out.pixel(0, 0)[0] < out.pixel(1, 0)[0]);
        assert!(out.pixel(0, 0)[0] < out.pixel(0, 1)[0]);
    }

    #[test]
    fn flip_and_window_match_full_then_crop() {
        let img = gradient(40, 30);
        let src = Rect {
            x: 3,
            y: 2,
            width: 31,
            height: 25,
        };
        let full = resample(
            &img,
            src,
            20,
            16,
            Rect {
                x: 0,
                y: 0,
                width: 20,
                height: 16,
            },
            Interpolation::Bicubic,
            false,
        );
        let win = Rect {
            x: 4,
            y: 3,
            width: 10,
            height: 9,
        };
        let part = resample(&img, src, 20, 16, win, Interpolation::Bicubic, false);
        let flipped = resample(&img, src, 20, 16, win, Interpolation::Bicubic, true);
        for y in 0..9 {
            for x in 0..10 {
                assert_eq!(part.pixel(x, y), full.pixel(x + 4, y + 3));
                assert_eq!(flipped.pixel(9 - x, y), part.pixel(x, y));
            }
        }
    }
}
