//! Grad-CAM overlay arithmetic (paper Fig. 2), as pure functions on small
//! arrays: bilinear upsampling of the coarse map to the image size, min-max normalisation, a
//! jet-like colormap and alpha blending. Sizes are always given as (height, width).

use crate::error::{Result, VizError};

pub use maxsup_data::RgbImage;

/// Converts a CHW float image in [0, 1] (values outside are clamped, NaN becomes 0) to 8 bits:
/// a de-normalised model input, for drawing.
pub fn rgb_from_chw_f32(height: usize, width: usize, data: &[f32]) -> Result<RgbImage> {
    check_size(height, width, data.len(), 3, "RGB image (CHW f32)")?;
    let plane = height * width;
    let to_u8 = |v: f32| {
        if v.is_nan() {
            0
        } else {
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        }
    };
    let data = (0..plane)
        .flat_map(|i| (0..3).map(move |c| to_u8(data[c * plane + i])))
        .collect();
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// A single-channel float map, row-major [height, width], e.g. a 14×14 Grad-CAM.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatMap {
    height: usize,
    width: usize,
    values: Vec<f32>,
}

impl HeatMap {
    /// Wraps `height · width` finite values.
    pub fn new(height: usize, width: usize, values: Vec<f32>) -> Result<Self> {
        check_size(height, width, values.len(), 1, "heat map")?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(VizError::InvalidInput(format!(
                "heat map value {i} (row {}, column {}) is {}",
                i / width,
                i % width,
                values[i]
            )));
        }
        Ok(Self {
            height,
            width,
            values,
        })
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Row-major values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Value at row `y`, column `x`.
    pub fn at(&self, y: usize, x: usize) -> f32 {
        self.values[y * self.width + x]
    }
}

fn check_size(height: usize, width: usize, len: usize, channels: usize, what: &str) -> Result<()> {
    if height == 0
        || width == 0
        || height
            .checked_mul(width)
            .and_then(|p| p.checked_mul(channels))
            != Some(len)
    {
        return Err(VizError::InvalidInput(format!(
            "{what}: {len} values do not fill {height}x{width}x{channels}"
        )));
    }
    Ok(())
}

/// Resizes `map` to `height × width` by bilinear interpolation with half-pixel centres and edge
/// clamping: the convention of OpenCV's `resize` (which pytorch_grad_cam uses) and of PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)`.
pub fn upsample_bilinear(map: &HeatMap, height: usize, width: usize) -> Result<HeatMap> {
    if height == 0 || width == 0 {
        return Err(VizError::InvalidInput(format!(
            "cannot resize a heat map to {height}x{width}"
        )));
    }
    let ys: Vec<(usize, usize, f32)> = (0..height)
        .map(|y| source_taps(y, height, map.height))
        .collect();
    let xs: Vec<(usize, usize, f32)> = (0..width)
        .map(|x| source_taps(x, width, map.width))
        .collect();
    let mut values = Vec::with_capacity(height * width);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = lerp(map.at(y0, x0), map.at(y0, x1), fx);
            let bottom = lerp(map.at(y1, x0), map.at(y1, x1), fx);
            values.push(lerp(top, bottom, fy));
        }
    }
    Ok(HeatMap {
        height,
        width,
        values,
    })
}

/// Resizes an RGB image with the same bilinear rule as [`upsample_bilinear`], per channel,
/// rounding to the nearest byte (used to fit overlays into grid cells).
pub fn resize_rgb_bilinear(image: &RgbImage, height: usize, width: usize) -> Result<RgbImage> {
    if image.height == 0 || image.width == 0 {
        return Err(VizError::InvalidInput(
            "cannot resize an empty image".into(),
        ));
    }
    if height == 0 || width == 0 {
        return Err(VizError::InvalidInput(format!(
            "cannot resize an image to {height}x{width}"
        )));
    }
    let ys: Vec<(usize, usize, f32)> = (0..height)
        .map(|y| source_taps(y, height, image.height))
        .collect();
    let xs: Vec<(usize, usize, f32)> = (0..width)
        .map(|x| source_taps(x, width, image.width))
        .collect();
    let at = |y: usize, x: usize, c: usize| image.data[(y * image.width + x) * 3 + c] as f32;
    let mut data = Vec::with_capacity(height * width * 3);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            for c in 0..3 {
                let top = lerp(at(y0, x0, c), at(y0, x1, c), fx);
                let bottom = lerp(at(y1, x0, c), at(y1, x1, c), fx);
                data.push(lerp(top, bottom, fy).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Ok(RgbImage {
        height,
        width,
        data,
    })
}

/// `a + (b − a)·t`: exactly `a` when `a == b`, so flat regions stay flat in f32.
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// For output index `i` of `out` samples over an input of `n` samples: the two input indices to
/// mix and the weight of the second.
fn source_taps(i: usize, out: usize, n: usize) -> (usize, usize, f32) {
    let src = ((i as f64 + 0.5) * n as f64 / out as f64 - 0.5).clamp(0.0, (n - 1) as f64);
    let i0 = src.floor() as usize;
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, (src - i0 as f64) as f32)
}

/// Min-max normalisation to [0, 1]; a constant map becomes all zeros (nothing stands out).
pub fn normalize_unit(map: &HeatMap) -> HeatMap {
    let (lo, hi) = map
        .values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    let values = if range > 0.0 {
        map.values.iter().map(|&v| (v - lo) / range).collect()
    } else {
        vec![0.0; map.values.len()]
    };
    HeatMap {
        height: map.height,
        width: map.width,
        values,
    }
}

/// Jet-like colormap of `v` in [0, 1] (clamped; NaN counts as 0): dark blue → blue → cyan →
/// yellow → red → dark red, the piecewise-linear jet of matplotlib/OpenCV:
/// `r = clamp(1.5 − |4v − 3|)`, `g = clamp(1.5 − |4v − 2|)`, `b = clamp(1.5 − |4v − 1|)`.
pub fn jet_color(v: f32) -> [u8; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let channel =
        |centre: f32| ((1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// Colours every value of a [0, 1] map with [`jet_color`].
pub fn colorize(map: &HeatMap) -> RgbImage {
    let data = map.values.iter().flat_map(|&v| jet_color(v)).collect();
    RgbImage {
        height: map.height,
        width: map.width,
        data,
    }
}

/// `round((1 − alpha) · image + alpha · overlay)` per channel; `alpha` in [0, 1] is the weight of
/// the overlay.
pub fn blend(image: &RgbImage, overlay: &RgbImage, alpha: f32) -> Result<RgbImage> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(VizError::InvalidInput(format!(
            "blend alpha {alpha} must lie in [0, 1]"
        )));
    }
    if (image.height, image.width) != (overlay.height, overlay.width) {
        return Err(VizError::InvalidInput(format!(
            "blend: image is {}x{} but overlay is {}x{}",
            image.height, image.width, overlay.height, overlay.width
        )));
    }
    let data = image
        .data
        .iter()
        .zip(&overlay.data)
        .map(|(&a, &b)| {
            ((1.0 - alpha) * a as f32 + alpha * b as f32)
                .round()
                .clamp(0.0, 255.0) as u8
        })
        .collect();
    Ok(RgbImage {
        height: image.height,
        width: image.width,
        data,
    })
}

/// The whole Grad-CAM rendering: upsample `cam` to the image size, normalise, colour with jet
/// and blend over `image` with weight `alpha` for the colours.
pub fn gradcam_overlay(image: &RgbImage, cam: &HeatMap, alpha: f32) -> Result<RgbImage> {
    let upsampled = upsample_bilinear(cam, image.height, image.width)?;
    blend(image, &colorize(&normalize_unit(&upsampled)), alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(h: usize, w: usize, v: &[f32]) -> HeatMap {
        HeatMap::new(h, w, v.to_vec()).unwrap()
    }

    #[test]
    fn upsampling_a_constant_map_stays_constant() {
        let up = upsample_bilinear(&map(3, 5, &[0.7; 15]), 17, 11).unwrap();
        assert_eq!((up.height(), up.width()), (17, 11));
        assert!(up.values().iter().all(|&v| v == 0.7), "{:?}", up.values());
    }

    #[test]
    fn upsampling_matches_half_pixel_bilinear() {
        // torch.nn.functional.interpolate([[0, 1], [2, 3]], size=4, mode="bilinear",
        // align_corners=False): rows [0, .25, .75, 1] + {0, .5, 1.5, 2}.
        let up = upsample_bilinear(&map(2, 2, &[0.0, 1.0, 2.0, 3.0]), 4, 4).unwrap();
        #[rustfmt::skip]
        let expected = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        assert_eq!(up.values(), expected);
        // Same size is the identity; downsizing 1x4 -> 1x2 averages neighbour pairs.
        assert_eq!(
            upsample_bilinear(&map(2, 2, &[0.0, 1.0, 2.0, 3.0]), 2, 2)
                .unwrap()
                .values(),
            [0.0, 1.0, 2.0, 3.0]
        );
        assert_eq!(
            upsample_bilinear(&map(1, 4, &[0.0, 2.0, 4.0, 8.0]), 1, 2)
                .unwrap()
                .values(),
            [1.0, 6.0]
        );
    }

    #[test]
    fn rgb_resize_keeps_flat_colours_and_interpolates_edges() {
        let flat = RgbImage::new(3, 2, [10u8, 200, 30].repeat(6)).unwrap();
        assert_eq!(
            resize_rgb_bilinear(&flat, 5, 7).unwrap().data,
            [10u8, 200, 30].repeat(35).as_slice()
        );
        // 1x2 black|white -> 1x4: 0, 0.25·255 = 63.75 -> 64, 191, 255 in every channel.
        let ramp = RgbImage::new(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
        let wide = resize_rgb_bilinear(&ramp, 1, 4).unwrap();
        assert_eq!(
            wide.data,
            [0, 0, 0, 64, 64, 64, 191, 191, 191, 255, 255, 255]
        );
    }

    #[test]
    fn normalisation_maps_min_to_zero_and_max_to_one() {
        assert_eq!(
            normalize_unit(&map(1, 4, &[-2.0, 0.0, 2.0, 6.0])).values(),
            [0.0, 0.25, 0.5, 1.0]
        );
        assert_eq!(normalize_unit(&map(1, 3, &[5.0; 3])).values(), [0.0; 3]);
    }

    #[test]
    fn jet_endpoints_and_midpoints() {
        assert_eq!(jet_color(0.0), [0, 0, 128]);
        assert_eq!(jet_color(0.125), [0, 0, 255]);
        assert_eq!(jet_color(0.375), [0, 255, 255]);
        assert_eq!(jet_color(0.5), [128, 255, 128]);
        assert_eq!(jet_color(0.625), [255, 255, 0]);
        assert_eq!(jet_color(0.875), [255, 0, 0]);
        assert_eq!(jet_color(1.0), [128, 0, 0]);
        assert_eq!(jet_color(-3.0), jet_color(0.0));
        assert_eq!(jet_color(7.0), jet_color(1.0));
        assert_eq!(jet_color(f32::NAN), jet_color(0.0));
    }

    #[test]
    fn blending_is_the_weighted_mean() {
        let image = RgbImage::new(2, 1, vec![100, 0, 255, 10, 20, 30]).unwrap();
        let overlay = RgbImage::new(2, 1, vec![200, 255, 0, 10, 20, 30]).unwrap();
        // 0.75·100 + 0.25·200 = 125; 0.25·255 = 63.75 -> 64; 0.75·255 = 191.25 -> 191.
        assert_eq!(
            blend(&image, &overlay, 0.25).unwrap().data,
            [125, 64, 191, 10, 20, 30]
        );
        assert_eq!(blend(&image, &overlay, 0.0).unwrap(), image);
        assert_eq!(blend(&image, &overlay, 1.0).unwrap(), overlay);
        assert!(blend(&image, &overlay, 1.5).is_err());
        let small = RgbImage::new(1, 1, vec![0, 0, 0]).unwrap();
        assert!(blend(&image, &small, 0.5).is_err());
    }

    #[test]
    fn chw_floats_become_hwc_bytes() {
        // 1x2 image, planes R = [0, 1], G = [0.5, 2.0 (clamped)], B = [-1 (clamped), NaN].
        let img = rgb_from_chw_f32(1, 2, &[0.0, 1.0, 0.5, 2.0, -1.0, f32::NAN]).unwrap();
        assert_eq!(img.data, [0, 128, 0, 255, 255, 0]);
        assert!(rgb_from_chw_f32(2, 2, &[0.0; 11]).is_err());
        assert!(HeatMap::new(1, 2, vec![0.0, f32::INFINITY]).is_err());
    }

    #[test]
    fn overlay_of_a_peaked_cam_is_red_at_the_peak_and_blue_far_away() {
        let image = RgbImage::new(8, 8, vec![0; 8 * 8 * 3]).unwrap();
        let mut cam = vec![0.0; 4];
        cam[0] = 1.0; // top-left cell hot
        let out = gradcam_overlay(&image, &map(2, 2, &cam), 1.0).unwrap();
        assert_eq!(out.pixel(0, 0), jet_color(1.0));
        assert_eq!(out.pixel(7, 7), jet_color(0.0));
    }
}
