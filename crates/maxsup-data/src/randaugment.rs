//! RandAugment with timm's semantics (`rand_augment_transform`), as DeiT uses it
//! (`--aa rand-m9-mstd0.5-inc1`, applied to the 8-bit image after crop and flip).
//!
//! Per image: draw `num_layers` ops uniformly *with replacement* from the op set; each op is skipped
//! with probability `1 - prob`; otherwise its magnitude is `N(magnitude, magnitude_std)` (or
//! `U(0, magnitude)` when the std is infinite), clipped to `[0, magnitude_max]`, mapped to the op's
//! argument by timm's level function (signed ops negate it with probability 1/2), and the op runs with
//! Pillow's arithmetic (see `pil_ops`, `pil_affine`). Our draws come from the per-sample `Rng`, so
//! results are reproducible, not identical to Python's random streams.

use crate::image::RgbImage;
use crate::pil_affine::{affine, rotate};
use crate::pil_ops;
use crate::resample::Interpolation;
use crate::rng::Rng;

/// timm's magnitude scale: level / 10 is the fraction of each op's range.
const LEVEL_DENOM: f64 = 10.0;

/// One RandAugment operation (timm names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AugmentOp {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// timm `_RAND_TRANSFORMS` (the op set without `inc1`).
pub const RAND_TRANSFORMS: [AugmentOp; 15] = [
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::Posterize,
    AugmentOp::Solarize,
    AugmentOp::SolarizeAdd,
    AugmentOp::Color,
    AugmentOp::Contrast,
    AugmentOp::Brightness,
    AugmentOp::Sharpness,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateXRel,
    AugmentOp::TranslateYRel,
];

/// timm `_RAND_INCREASING_TRANSFORMS` (`inc1`): severity grows with magnitude for every op.
pub const RAND_INCREASING_TRANSFORMS: [AugmentOp; 15] = [
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::PosterizeIncreasing,
    AugmentOp::SolarizeIncreasing,
    AugmentOp::SolarizeAdd,
    AugmentOp::ColorIncreasing,
    AugmentOp::ContrastIncreasing,
    AugmentOp::BrightnessIncreasing,
    AugmentOp::SharpnessIncreasing,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateXRel,
    AugmentOp::TranslateYRel,
];

/// Everything an op needs besides its argument (timm's `hparams`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpContext {
    /// Colour of pixels uncovered by geometric ops (timm `img_mean`: the dataset mean in 0..255).
    pub fill: [u8; 3],
    /// Resampling of geometric ops; `None` picks bilinear or bicubic at random per op (timm's
    /// default when no `interpolation` hparam is given). DeiT passes bicubic.
    pub interpolation: Option<Interpolation>,
    /// Range of TranslateX/YRel as a fraction of the image side (timm default 0.45).
    pub translate_pct: f64,
}

impl AugmentOp {
    /// timm's level function: magnitude (0..10 scale) -> op argument. Signed ops draw their sign here.
    pub fn level_to_arg(self, level: f64, ctx: &OpContext, rng: &mut Rng) -> f64 {
        use AugmentOp::*;
        let frac = level / LEVEL_DENOM;
        let mut negate = |v: f64| if rng.chance(0.5) { -v } else { v };
        match self {
            AutoContrast | Equalize | Invert => 0.0,
            Rotate => negate(frac * 30.0),
            Posterize => (frac * 4.0).trunc(),
            PosterizeIncreasing => 4.0 - (frac * 4.0).trunc(),
            Solarize => (frac * 256.0).trunc().min(256.0),
            SolarizeIncreasing => 256.0 - (frac * 256.0).trunc().min(256.0),
            SolarizeAdd => (frac * 110.0).trunc().min(128.0),
            Color | Contrast | Brightness | Sharpness => frac * 1.8 + 0.1,
            ColorIncreasing | ContrastIncreasing | BrightnessIncreasing | SharpnessIncreasing => {
                (1.0 + negate(frac * 0.9)).max(0.1)
            }
            ShearX | ShearY => negate(frac * 0.3),
            TranslateXRel | TranslateYRel => negate(frac * ctx.translate_pct),
        }
    }

    /// Runs the op with an explicit argument (degrees, bits, threshold, enhance factor, shear factor or
    /// translate fraction, depending on the op). Deterministic except for `interpolation: None`.
    pub fn apply(self, img: &RgbImage, arg: f64, ctx: &OpContext, rng: &mut Rng) -> RgbImage {
        use AugmentOp::*;
        let mut filter = || {
            ctx.interpolation.unwrap_or_else(|| {
                if rng.below(2) == 0 {
                    Interpolation::Bilinear
                } else {
                    Interpolation::Bicubic
                }
            })
        };
        match self {
            AutoContrast => pil_ops::autocontrast(img),
            Equalize => pil_ops::equalize(img),
            Invert => pil_ops::invert(img),
            Rotate => rotate(img, arg, filter(), ctx.fill),
            Posterize | PosterizeIncreasing => pil_ops::posterize(img, arg as u32),
            Solarize | SolarizeIncreasing => pil_ops::solarize(img, arg as u32),
            SolarizeAdd => pil_ops::solarize_add(img, arg as u32, 128),
            Color | ColorIncreasing => pil_ops::enhance_color(img, arg),
            Contrast | ContrastIncreasing => pil_ops::enhance_contrast(img, arg),
            Brightness | BrightnessIncreasing => pil_ops::enhance_brightness(img, arg),
            Sharpness | SharpnessIncreasing => pil_ops::enhance_sharpness(img, arg),
            ShearX => affine(img, [1.0, arg, 0.0, 0.0, 1.0, 0.0], filter(), ctx.fill),
            ShearY => affine(img, [1.0, 0.0, 0.0, arg, 1.0, 0.0], filter(), ctx.fill),
            TranslateXRel => affine(
                img,
                [1.0, 0.0, arg * img.width as f64, 0.0, 1.0, 0.0],
                filter(),
                ctx.fill,
            ),
            TranslateYRel => affine(
                img,
                [1.0, 0.0, 0.0, 0.0, 1.0, arg * img.height as f64],
                filter(),
                ctx.fill,
            ),
        }
    }
}

/// A RandAugment policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    pub ops: Vec<AugmentOp>,
    /// Ops drawn per image (`n`, default 2).
    pub num_layers: usize,
    /// Mean magnitude (`m`, 0..10 scale).
    pub magnitude: f64,
    /// Std of the magnitude noise (`mstd`); `f64::INFINITY` means uniform in `[0, magnitude]`.
    pub magnitude_std: f64,
    /// Upper clip of the sampled magnitude (`mmax`, default 10).
    pub magnitude_max: f64,
    /// Probability that a drawn op is applied (`p`, default 0.5).
    pub prob: f64,
    pub context: OpContext,
}

impl RandAugment {
    /// Parses a timm config string such as `rand-m9-mstd0.5-inc1` (sections m, n, p, mstd, mmax,
    /// inc). Weighted op sets (`t...`) are not supported.
    pub fn from_config(config: &str, context: OpContext) -> anyhow::Result<RandAugment> {
        let mut parts = config.split('-');
        anyhow::ensure!(
            parts.next() == Some("rand"),
            "RandAugment config '{config}' must start with 'rand'"
        );
        let mut ra = RandAugment {
            ops: RAND_TRANSFORMS.to_vec(),
            num_layers: 2,
            magnitude: LEVEL_DENOM,
            magnitude_std: 0.0,
            magnitude_max: LEVEL_DENOM,
            prob: 0.5,
            context,
        };
        for part in parts {
            let split = part
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(part.len());
            let (key, val) = part.split_at(split);
            let num = || -> anyhow::Result<f64> {
                val.parse::<f64>().map_err(|_| {
                    anyhow::anyhow!("RandAugment config '{config}': section '{part}' has no number")
                })
            };
            match key {
                "m" => ra.magnitude = num()?.trunc(),
                "n" => ra.num_layers = num()? as usize,
                "p" => ra.prob = num()?,
                "mstd" => {
                    ra.magnitude_std = if num()? > 100.0 {
                        f64::INFINITY
                    } else {
                        num()?
                    }
                }
                "mmax" => ra.magnitude_max = num()?.trunc(),
                "inc" => {
                    ra.ops = if num()? != 0.0 {
                        RAND_INCREASING_TRANSFORMS.to_vec()
                    } else {
                        RAND_TRANSFORMS.to_vec()
                    }
                }
                _ => anyhow::bail!("RandAugment config '{config}': unknown section '{part}'"),
            }
        }
        Ok(ra)
    }

    /// DeiT's `rand-m9-mstd0.5-inc1` with timm's hparams for ImageNet: fill = round(255 * mean)
    /// = (124, 116, 104), bicubic resampling (`--train-interpolation bicubic`), translate 0.45.
    pub fn deit() -> RandAugment {
        let context = OpContext {
            fill: [124, 116, 104],
            interpolation: Some(Interpolation::Bicubic),
            translate_pct: 0.45,
        };
        RandAugment::from_config("rand-m9-mstd0.5-inc1", context)
            .expect("the DeiT config string is valid")
    }

    /// Draws this image's magnitude for one op.
    fn sample_magnitude(&self, rng: &mut Rng) -> f64 {
        let m = if self.magnitude_std == f64::INFINITY {
            rng.uniform_range(0.0, self.magnitude)
        } else if self.magnitude_std > 0.0 {
            self.magnitude + self.magnitude_std * rng.normal()
        } else {
            self.magnitude
        };
        m.min(self.magnitude_max).max(0.0)
    }

    /// Augments one 8-bit image.
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng) -> RgbImage {
        let mut out = img.clone();
        if self.ops.is_empty() {
            return out;
        }
        for _ in 0..self.num_layers {
            let op = self.ops[rng.below(self.ops.len() as u64) as usize];
            if self.prob < 1.0 && rng.uniform() > self.prob {
                continue;
            }
            let level = self.sample_magnitude(rng);
            let arg = op.level_to_arg(level, &self.context, rng);
            out = op.apply(&out, arg, &self.context, rng);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deit_config_parses_to_timm_defaults() {
        let ra = RandAugment::deit();
        assert_eq!(
            (
                ra.num_layers,
                ra.magnitude,
                ra.magnitude_std,
                ra.magnitude_max,
                ra.prob
            ),
            (2, 9.0, 0.5, 10.0, 0.5)
        );
        assert_eq!(ra.ops, RAND_INCREASING_TRANSFORMS.to_vec());
        let ctx = ra.context;
        assert_eq!(
            RandAugment::from_config("rand-m7-n3-p0.8", ctx)
                .unwrap()
                .ops,
            RAND_TRANSFORMS.to_vec()
        );
        assert_eq!(
            RandAugment::from_config("rand-mstd101", ctx)
                .unwrap()
                .magnitude_std,
            f64::INFINITY
        );
        assert!(RandAugment::from_config("auto-m9", ctx).is_err());
        assert!(RandAugment::from_config("rand-x3", ctx).is_err());
    }

    #[test]
    fn level_functions_match_timm_at_magnitude_9() {
        let ctx = RandAugment::deit().context;
        let mut rng = Rng::from_seed(0);
        let mut arg = |op: AugmentOp| op.level_to_arg(9.0, &ctx, &mut rng);
        assert_eq!(arg(AugmentOp::PosterizeIncreasing), 1.0);
        assert_eq!(arg(AugmentOp::SolarizeIncreasing), 26.0);
        assert_eq!(arg(AugmentOp::SolarizeAdd), 99.0);
        assert_eq!(arg(AugmentOp::Posterize), 3.0);
        assert!((arg(AugmentOp::Rotate).abs() - 27.0).abs() < 1e-12);
        assert!((arg(AugmentOp::ShearX).abs() - 0.27).abs() < 1e-12);
        assert!((arg(AugmentOp::TranslateXRel).abs() - 0.405).abs() < 1e-12);
        let f = arg(AugmentOp::ColorIncreasing);
        assert!((f - 1.81).abs() < 1e-12 || (f - 0.19).abs() < 1e-12, "{f}");
        assert_eq!(
            AugmentOp::PosterizeIncreasing.level_to_arg(10.0, &ctx, &mut rng),
            0.0
        );
    }
}
