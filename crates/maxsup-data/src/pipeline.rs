//! A per-sample transform pipeline, described as data so the trainer can pick a preset
//! ("cifar train", "imagenet eval", ...) or adjust one field.
//!
//! Order (torchvision / timm): geometry (crop + resize) -> horizontal flip -> photometric ops on 8-bit
//! RGB (RandAugment, then color jitter) -> ToTensor + Normalize to `f32` CHW -> random erasing.

use crate::color_jitter::ColorJitter;
use crate::dataset::RawSample;
use crate::decode::{decode, decode_jpeg_crop, jpeg_region_info};
use crate::geometry::{random_resized_crop_params, resize_center_crop_plan, Geometry};
use crate::image::RgbImage;
pub use crate::normalize::normalize_into;
use crate::normalize::planar_into;
use crate::randaugment::RandAugment;
use crate::random_erasing::RandomErasing;
use crate::resample::{resample, Interpolation, Rect};
use crate::rng::Rng;

/// Per-channel statistics of CIFAR-10's training set (computed from the 50,000 images).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// torchvision / timm ImageNet statistics.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// torchvision's RandomResizedCrop defaults.
pub const RRC_SCALE: (f64, f64) = (0.08, 1.0);
pub const RRC_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A complete per-sample transform: image in, normalized `[3, size, size]` `f32` out.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub geometry: Geometry,
    /// Probability of a horizontal flip (0 for evaluation).
    pub flip_prob: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// timm RandAugment on the 8-bit image (DeiT: `rand-m9-mstd0.5-inc1`).
    pub randaugment: Option<RandAugment>,
    /// torchvision ColorJitter on the 8-bit image, after RandAugment (timm only uses it without AA).
    pub color_jitter: Option<ColorJitter>,
    /// timm RandomErasing on the normalized sample (DeiT: p 0.25, pixel mode).
    pub random_erasing: Option<RandomErasing>,
}

impl Pipeline {
    /// CIFAR training: zero-pad 4 + random 32x32 crop, flip, CIFAR mean/std.
    pub fn cifar_train() -> Pipeline {
        Pipeline {
            geometry: Geometry::PadRandomCrop {
                size: 32,
                padding: 4,
            },
            flip_prob: 0.5,
            mean: CIFAR10_MEAN,
            std: CIFAR10_STD,
            randaugment: None,
            color_jitter: None,
            random_erasing: None,
        }
    }

    /// CIFAR evaluation: normalize only.
    pub fn cifar_eval() -> Pipeline {
        Pipeline {
            geometry: Geometry::Identity { size: 32 },
            flip_prob: 0.0,
            mean: CIFAR10_MEAN,
            std: CIFAR10_STD,
            randaugment: None,
            color_jitter: None,
            random_erasing: None,
        }
    }

    /// ImageNet training: RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3), flip, ImageNet mean/std.
    /// torchvision recipes use bilinear, DeiT bicubic.
    pub fn imagenet_train(size: usize, interpolation: Interpolation) -> Pipeline {
        Pipeline {
            geometry: Geometry::RandomResizedCrop {
                size,
                scale: RRC_SCALE,
                ratio: RRC_RATIO,
                interpolation,
            },
            flip_prob: 0.5,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            randaugment: None,
            color_jitter: None,
            random_erasing: None,
        }
    }

    /// ImageNet evaluation: Resize(int(size / crop_ratio)) of the shorter side, CenterCrop(size).
    /// crop_ratio 0.875 gives the classic 256 -> 224.
    pub fn imagenet_eval(size: usize, crop_ratio: f64, interpolation: Interpolation) -> Pipeline {
        Pipeline {
            geometry: Geometry::ResizeCenterCrop {
                resize: (size as f64 / crop_ratio) as usize,
                crop: size,
                interpolation,
            },
            flip_prob: 0.0,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            randaugment: None,
            color_jitter: None,
            random_erasing: None,
        }
    }

    /// DeiT training (the official DeiT recipe, Touvron et al. 2021): RandomResizedCrop(size) bicubic, flip, RandAugment
    /// `rand-m9-mstd0.5-inc1`, ImageNet mean/std, RandomErasing(0.25, pixel, 1 box). `--color-jitter
    /// 0.3` is set in DeiT but timm drops it when auto-augment is on, so `color_jitter` is `None`.
    pub fn deit_train(size: usize) -> Pipeline {
        Pipeline {
            randaugment: Some(RandAugment::deit()),
            random_erasing: Some(RandomErasing::deit()),
            ..Pipeline::imagenet_train(size, Interpolation::Bicubic)
        }
    }

    /// Looks a preset up by name: "cifar-train", "cifar-eval", "imagenet-train", "imagenet-eval",
    /// "deit-train" (ImageNet presets at 224 px, bilinear, crop ratio 0.875; DeiT bicubic).
    pub fn preset(name: &str) -> anyhow::Result<Pipeline> {
        Ok(match name {
            "deit-train" => Pipeline::deit_train(224),
            "cifar-train" => Pipeline::cifar_train(),
            "cifar-eval" => Pipeline::cifar_eval(),
            "imagenet-train" => Pipeline::imagenet_train(224, Interpolation::Bilinear),
            "imagenet-eval" => Pipeline::imagenet_eval(224, 0.875, Interpolation::Bilinear),
            other => anyhow::bail!(
                "unknown transform preset '{other}' (expected cifar-train, cifar-eval, imagenet-train, imagenet-eval, deit-train)"
            ),
        })
    }

    /// Side of the output image.
    pub fn output_size(&self) -> usize {
        self.geometry.output_size()
    }

    /// Number of `f32` values one sample produces (3 * size * size).
    pub fn sample_len(&self) -> usize {
        3 * self.output_size() * self.output_size()
    }

    /// Transforms `img` into `out` (CHW, `sample_len()` values). All randomness comes from `rng`,
    /// drawn in a fixed order, so the result depends only on the image and the generator state.
    pub fn apply_into(&self, img: &RgbImage, rng: &mut Rng, out: &mut [f32]) -> anyhow::Result<()> {
        self.check_output(out)?;
        let img = self.geometry_of(img, rng)?;
        self.finish_into(img, rng, out)
    }

    /// Whether [`Pipeline::apply_raw_pixels_into`] applies: every step before normalization
    /// works on 8-bit pixels, random erasing (timm's, on the normalized sample) does not.
    pub fn has_pixel_output(&self) -> bool {
        self.random_erasing.is_none()
    }

    /// Transforms a sample like [`Pipeline::apply_raw_into`] but stops before normalization:
    /// `out` gets the 8-bit CHW pixels (`sample_len()` bytes), a quarter of the bytes to copy to
    /// a GPU, which normalizes them there with [`Pipeline::mean`] and [`Pipeline::std`]. The
    /// random draws are the same, so the pixels normalize to exactly the values
    /// `apply_raw_into` writes. Fails for a pipeline with random erasing.
    pub fn apply_raw_pixels_into(
        &self,
        raw: &RawSample,
        rng: &mut Rng,
        out: &mut [u8],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.has_pixel_output(),
            "this pipeline ends with random erasing, which needs the normalized sample: it cannot output 8-bit pixels"
        );
        anyhow::ensure!(
            out.len() == self.sample_len(),
            "output slice has {} bytes, expected {}",
            out.len(),
            self.sample_len()
        );
        let img = match raw {
            RawSample::Decoded(img) => self.geometry_of(img, rng)?,
            RawSample::Encoded(bytes) => self.encoded_geometry_of(bytes, rng)?,
        };
        planar_into(&self.photometric(img, rng), out);
        Ok(())
    }

    /// Flip and geometry of a decoded image.
    fn geometry_of(&self, img: &RgbImage, rng: &mut Rng) -> anyhow::Result<RgbImage> {
        let flip = self.flip_prob > 0.0 && rng.chance(self.flip_prob);
        self.geometry.apply(img, rng, flip)
    }

    /// Transforms a sample as a dataset stored it (see [`Dataset::load_raw`](crate::Dataset)).
    pub fn apply_raw_into(
        &self,
        raw: &RawSample,
        rng: &mut Rng,
        out: &mut [f32],
    ) -> anyhow::Result<()> {
        match raw {
            RawSample::Decoded(img) => self.apply_into(img, rng, out),
            RawSample::Encoded(bytes) => self.apply_encoded_into(bytes, rng, out),
        }
    }

    /// Decodes and transforms an encoded image. For JPEGs `maxsup-jpeg` decodes only what the
    /// geometry needs: RandomResizedCrop decodes just the crop ([`decode_jpeg_crop`]), and both it
    /// and Resize + CenterCrop decode at 1/2-1/8 scale in the DCT domain when the source is at
    /// least that many times larger than the resized size. The random draws are those of
    /// [`Pipeline::apply_into`], so crop and flip are the same. Other geometries and formats decode
    /// the whole image.
    pub fn apply_encoded_into(
        &self,
        bytes: &[u8],
        rng: &mut Rng,
        out: &mut [f32],
    ) -> anyhow::Result<()> {
        self.check_output(out)?;
        let img = self.encoded_geometry_of(bytes, rng)?;
        self.finish_into(img, rng, out)
    }

    /// Decoding, flip and geometry of an encoded image (see [`Pipeline::apply_encoded_into`]).
    fn encoded_geometry_of(&self, bytes: &[u8], rng: &mut Rng) -> anyhow::Result<RgbImage> {
        let info = match self.geometry {
            Geometry::RandomResizedCrop { .. } | Geometry::ResizeCenterCrop { .. } => {
                jpeg_region_info(bytes)?
            }
            _ => None,
        };
        let Some(info) = info else {
            return self.geometry_of(&decode(bytes)?, rng);
        };
        let flip = self.flip_prob > 0.0 && rng.chance(self.flip_prob);
        let img = match self.geometry {
            Geometry::RandomResizedCrop {
                size,
                scale,
                ratio,
                interpolation,
            } => {
                let crop = random_resized_crop_params(info.width, info.height, scale, ratio, rng);
                let img = decode_jpeg_crop(bytes, &info, crop, size, size)?;
                let (all, window) = (Rect::sized(img.width, img.height), Rect::sized(size, size));
                resample(&img, all, size, size, window, interpolation, flip)
            }
            Geometry::ResizeCenterCrop {
                resize,
                crop,
                interpolation,
            } => {
                let ((w, h), window) =
                    resize_center_crop_plan(info.width, info.height, resize, crop)?;
                let all = Rect::sized(info.width, info.height);
                let img = decode_jpeg_crop(bytes, &info, all, w, h)?;
                let decoded = Rect::sized(img.width, img.height);
                resample(&img, decoded, w, h, window, interpolation, flip)
            }
            _ => unreachable!("only the geometries matched above reach here"),
        };
        Ok(img)
    }

    fn check_output(&self, out: &[f32]) -> anyhow::Result<()> {
        anyhow::ensure!(
            out.len() == self.sample_len(),
            "output slice has {} values, expected {}",
            out.len(),
            self.sample_len()
        );
        Ok(())
    }

    /// Everything after the geometry: photometric ops, normalization, random erasing.
    fn finish_into(&self, img: RgbImage, rng: &mut Rng, out: &mut [f32]) -> anyhow::Result<()> {
        let img = self.photometric(img, rng);
        normalize_into(&img, self.mean, self.std, out);
        if let Some(re) = &self.random_erasing {
            re.apply(out, 3, img.height, img.width, rng);
        }
        Ok(())
    }

    /// The photometric ops on the 8-bit image: RandAugment, then color jitter.
    fn photometric(&self, mut img: RgbImage, rng: &mut Rng) -> RgbImage {
        if let Some(ra) = &self.randaugment {
            img = ra.apply(&img, rng);
        }
        if let Some(cj) = &self.color_jitter {
            img = cj.apply(&img, rng);
        }
        img
    }

    /// Convenience: allocates the output.
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng) -> anyhow::Result<Vec<f32>> {
        let mut out = vec![0f32; self.sample_len()];
        self.apply_into(img, rng, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_closed_form() {
        let img = RgbImage::new(2, 1, vec![0, 128, 255, 10, 20, 30]).unwrap();
        let mut out = vec![0f32; 6];
        normalize_into(&img, IMAGENET_MEAN, IMAGENET_STD, &mut out);
        let expect = |v: f32, c: usize| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        assert_eq!(
            out,
            vec![
                expect(0., 0),
                expect(10., 0),
                expect(128., 1),
                expect(20., 1),
                expect(255., 2),
                expect(30., 2)
            ]
        );
    }

    #[test]
    fn presets_have_expected_sizes() {
        assert_eq!(
            Pipeline::preset("imagenet-eval").unwrap().geometry,
            Geometry::ResizeCenterCrop {
                resize: 256,
                crop: 224,
                interpolation: Interpolation::Bilinear
            }
        );
        assert_eq!(
            Pipeline::preset("cifar-train").unwrap().sample_len(),
            3 * 32 * 32
        );
        assert!(Pipeline::preset("nope").is_err());
    }

    #[test]
    fn cifar_eval_is_plain_normalization() {
        let data: Vec<u8> = (0..32 * 32 * 3).map(|i| (i % 256) as u8).collect();
        let img = RgbImage::new(32, 32, data).unwrap();
        let out = Pipeline::cifar_eval()
            .apply(&img, &mut Rng::from_seed(0))
            .unwrap();
        let p = img.pixel(5, 7);
        assert_eq!(
            out[7 * 32 + 5],
            (p[0] as f32 / 255.0 - CIFAR10_MEAN[0]) / CIFAR10_STD[0]
        );
        assert_eq!(
            out[2 * 1024 + 7 * 32 + 5],
            (p[2] as f32 / 255.0 - CIFAR10_MEAN[2]) / CIFAR10_STD[2]
        );
    }
}
