//! RandAugment / ColorJitter ops against timm + Pillow (fixtures from fixtures/gen_augment.py; all
//! bit-exact), and
//! statistical checks of the random parts (op selection, magnitudes, random erasing).

use std::path::PathBuf;

use crate::decode::decode;
use crate::pil_ops;
use crate::randaugment::{AugmentOp, OpContext, RAND_INCREASING_TRANSFORMS};
use crate::random_erasing::RandomErasing;
use crate::{Interpolation, Pipeline, RandAugment, RgbImage, Rng};

fn load(name: &str) -> RgbImage {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    decode(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// (max abs diff, fraction of values that differ).
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let d: Vec<u8> = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    (
        *d.iter().max().unwrap(),
        d.iter().filter(|&&v| v > 0).count() as f64 / d.len() as f64,
    )
}

fn ctx(interpolation: Interpolation) -> OpContext {
    OpContext {
        fill: [124, 116, 104],
        interpolation: Some(interpolation),
        translate_pct: 0.45,
    }
}

fn check(
    op: AugmentOp,
    arg: f64,
    interpolation: Interpolation,
    src: &str,
    fixture: &str,
    max_tol: u8,
    frac_tol: f64,
) {
    let out = op.apply(&load(src), arg, &ctx(interpolation), &mut Rng::from_seed(0));
    let (max, frac) = diff(&out, &load(&format!("ra_{fixture}.png")));
    eprintln!(
        "{fixture}: max diff {max}, {:.2}% of values differ",
        frac * 100.0
    );
    assert!(
        max <= max_tol && frac <= frac_tol,
        "{fixture}: max {max}, fraction differing {frac}"
    );
}

#[test]
fn pixel_ops_match_pillow_exactly() {
    use AugmentOp::*;
    let b = Interpolation::Bicubic;
    check(
        AutoContrast,
        0.0,
        b,
        "ra_src_low.png",
        "autocontrast",
        0,
        0.0,
    );
    check(Equalize, 0.0, b, "ra_src_low.png", "equalize", 0, 0.0);
    check(Equalize, 0.0, b, "ra_src.png", "equalize_full", 0, 0.0);
    check(Invert, 0.0, b, "ra_src.png", "invert", 0, 0.0);
    check(
        PosterizeIncreasing,
        1.0,
        b,
        "ra_src.png",
        "posterize1",
        0,
        0.0,
    );
    check(Posterize, 3.0, b, "ra_src.png", "posterize3", 0, 0.0);
    check(
        SolarizeIncreasing,
        26.0,
        b,
        "ra_src.png",
        "solarize26",
        0,
        0.0,
    );
    check(SolarizeAdd, 99.0, b, "ra_src.png", "solarize_add99", 0, 0.0);
}

#[test]
fn enhance_ops_match_pillow() {
    use AugmentOp::*;
    let b = Interpolation::Bicubic;
    for (op, name) in [
        (ColorIncreasing, "color"),
        (ContrastIncreasing, "contrast"),
        (BrightnessIncreasing, "brightness"),
        (SharpnessIncreasing, "sharpness"),
    ] {
        for f in ["1.81", "0.19"] {
            check(
                op,
                f.parse().unwrap(),
                b,
                "ra_src.png",
                &format!("{name}{f}"),
                0,
                0.0,
            );
        }
    }
}

#[test]
fn geometric_ops_match_pillow() {
    use AugmentOp::*;
    let (bc, bl) = (Interpolation::Bicubic, Interpolation::Bilinear);
    check(Rotate, 27.0, bc, "ra_src.png", "rotate27_bicubic", 0, 0.0);
    check(
        Rotate,
        -13.0,
        bl,
        "ra_src.png",
        "rotate-13_bilinear",
        0,
        0.0,
    );
    check(ShearX, 0.27, bc, "ra_src.png", "shearx0.27_bicubic", 0, 0.0);
    check(
        ShearY,
        -0.27,
        bl,
        "ra_src.png",
        "sheary-0.27_bilinear",
        0,
        0.0,
    );
    check(
        TranslateXRel,
        0.405,
        bc,
        "ra_src.png",
        "translatex0.405_bicubic",
        0,
        0.0,
    );
    check(
        TranslateYRel,
        -0.3,
        bc,
        "ra_src.png",
        "translatey-0.3_bicubic",
        0,
        0.0,
    );
}

#[test]
fn color_jitter_ops_match_torchvision_functional() {
    let src = load("ra_src.png");
    for (out, name) in [
        (pil_ops::enhance_brightness(&src, 0.7), "tv_brightness0.7"),
        (pil_ops::enhance_contrast(&src, 1.3), "tv_contrast1.3"),
        (pil_ops::enhance_color(&src, 0.7), "tv_saturation0.7"),
    ] {
        let (max, frac) = diff(&out, &load(&format!("ra_{name}.png")));
        eprintln!("{name}: max diff {max}, {:.2}% differ", frac * 100.0);
        assert!(max == 0, "{name}: max {max} frac {frac}");
    }
}

#[test]
fn randaugment_selects_ops_uniformly_with_prob_one_half() {
    // Count which ops change the image: with n=1, p=0.5 each op should run ~ 1/30 of the time.
    let mut ra = RandAugment::deit();
    ra.num_layers = 1;
    ra.ops = vec![AugmentOp::Invert, AugmentOp::Posterize];
    let img = load("ra_src.png");
    let inverted = pil_ops::invert(&img);
    let mut rng = Rng::from_seed(11);
    let (n, mut inv, mut post, mut same) = (4000, 0, 0, 0);
    for _ in 0..n {
        let out = ra.apply(&img, &mut rng);
        if out == img {
            same += 1;
        } else if out == inverted {
            inv += 1;
        } else {
            post += 1;
        }
    }
    // Binomial(4000, 1/4): sd ~ 27; (1/2): sd ~ 32.
    assert!((880..1120).contains(&inv), "{inv}");
    assert!((880..1120).contains(&post), "{post}");
    assert!((1870..2130).contains(&same), "{same}");
}

#[test]
fn deit_randaugment_is_deterministic_and_changes_images() {
    let ra = RandAugment::deit();
    assert_eq!(ra.ops, RAND_INCREASING_TRANSFORMS.to_vec());
    let img = load("ra_src.png");
    let a: Vec<_> = (0..20)
        .map(|i| ra.apply(&img, &mut Rng::from_seed(i)))
        .collect();
    let b: Vec<_> = (0..20)
        .map(|i| ra.apply(&img, &mut Rng::from_seed(i)))
        .collect();
    assert_eq!(a, b);
    // P(both ops skipped) = 1/4, so most of 20 draws alter the image.
    let changed = a.iter().filter(|o| **o != img).count();
    assert!(changed >= 10, "{changed}");
}

#[test]
fn random_erasing_area_and_aspect_follow_timm() {
    let re = RandomErasing::deit();
    let (c, h, w) = (3, 224, 224);
    let mut sample = vec![0f32; c * h * w];
    let mut rng = Rng::from_seed(3);
    let n = 4000;
    let (mut erased, mut area_sum, mut log_aspect_sum) = (0, 0.0, 0.0);
    for _ in 0..n {
        for b in re.apply(&mut sample, c, h, w, &mut rng) {
            erased += 1;
            let frac = (b.height * b.width) as f64 / (h * w) as f64;
            assert!(frac > 0.015 && frac < 0.36, "{frac}");
            assert!(b.top + b.height <= h && b.left + b.width <= w);
            area_sum += frac;
            log_aspect_sum += (b.height as f64 / b.width as f64).ln();
        }
    }
    // Probability 0.25: Binomial(4000, 0.25) has sd ~ 27.
    assert!((900..1100).contains(&erased), "{erased}");
    // Area ~ U(0.02, 1/3) (minus rejected tall/wide boxes): mean near 0.177; log aspect symmetric.
    let mean_area = area_sum / erased as f64;
    assert!((mean_area - 0.177).abs() < 0.01, "{mean_area}");
    assert!((log_aspect_sum / erased as f64).abs() < 0.06);
    // Pixel mode: the erased values are standard normal.
    let vals: Vec<f64> = sample
        .iter()
        .filter(|&&v| v != 0.0)
        .map(|&v| v as f64)
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    assert!(
        mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
        "mean {mean} var {var}"
    );
}

#[test]
fn deit_pipeline_runs_and_is_deterministic() {
    let p = Pipeline::deit_train(32);
    assert!(p.randaugment.is_some() && p.random_erasing.is_some() && p.color_jitter.is_none());
    let img = load("photo_baseline.expected.png");
    let a = p.apply(&img, &mut Rng::from_seed(5)).unwrap();
    assert_eq!(a, p.apply(&img, &mut Rng::from_seed(5)).unwrap());
    assert_eq!(a.len(), 3 * 32 * 32);
    assert!(a.iter().all(|v| v.is_finite()));
}
