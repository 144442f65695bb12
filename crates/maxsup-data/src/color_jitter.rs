//! torchvision `ColorJitter(brightness, contrast, saturation)` on 8-bit images (the PIL code path:
//! `ImageEnhance.Brightness / Contrast / Color`), with timm's scalar convention `--color-jitter cj`
//! = `(cj, cj, cj)` and no hue.
//!
//! timm rule (`transforms_imagenet_train`): color jitter is added only when no auto-augment policy is
//! configured (unless forced), so in the DeiT recipe (`--color-jitter 0.3 --aa rand-...`) it is
//! effectively unused and `Pipeline::deit_train` leaves it off.

use crate::image::RgbImage;
use crate::pil_ops::{enhance_brightness, enhance_color, enhance_contrast};
use crate::rng::Rng;

/// Jitter strengths; each factor is drawn from `U[max(0, 1 - s), 1 + s]`, 0 disables that part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
}

impl ColorJitter {
    /// timm's scalar form: the same strength for brightness, contrast and saturation.
    pub fn uniform(strength: f64) -> ColorJitter {
        ColorJitter {
            brightness: strength,
            contrast: strength,
            saturation: strength,
        }
    }

    /// Draws the factors and a random order (torchvision permutes the four adjustments; hue is
    /// unsupported here, so its slot is simply skipped) and applies them.
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng) -> RgbImage {
        let mut order = [0usize, 1, 2, 3];
        rng.shuffle(&mut order);
        let strengths = [self.brightness, self.contrast, self.saturation];
        let factors: Vec<Option<f64>> = strengths
            .iter()
            .map(|&s| (s > 0.0).then(|| rng.uniform_range((1.0 - s).max(0.0), 1.0 + s)))
            .collect();
        let mut out = img.clone();
        for k in order {
            match (k, factors.get(k).copied().flatten()) {
                (0, Some(f)) => out = enhance_brightness(&out, f),
                (1, Some(f)) => out = enhance_contrast(&out, f),
                (2, Some(f)) => out = enhance_color(&out, f),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_strength_is_identity_and_factors_stay_in_range() {
        let img = RgbImage::new(2, 2, (0..12).map(|i| (i * 20) as u8).collect()).unwrap();
        let mut rng = Rng::from_seed(4);
        assert_eq!(ColorJitter::uniform(0.0).apply(&img, &mut rng), img);
        // Brightness only, strength 0.3: every pixel is scaled by a factor in [0.7, 1.3].
        let cj = ColorJitter {
            brightness: 0.3,
            contrast: 0.0,
            saturation: 0.0,
        };
        for _ in 0..50 {
            let out = cj.apply(&img, &mut rng);
            let (a, b) = (img.data[11] as f64, out.data[11] as f64);
            assert!(
                b >= (a * 0.7).floor() && b <= (a * 1.3).min(255.0),
                "{a} -> {b}"
            );
        }
    }
}
