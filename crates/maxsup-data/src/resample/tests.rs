use super::*;

/// The previous, straightforward implementation (one pixel, one channel at a time), which the
/// vectorized code must reproduce exactly.
fn reference(
    img: &RgbImage,
    src_rect: Rect,
    out_w: usize,
    out_h: usize,
    window: Rect,
    filter: Interpolation,
    flip: bool,
) -> RgbImage {
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

#[test]
fn matches_reference_implementation() {
    let mut rng = crate::Rng::from_seed(7);
    let mut pick = |lo: usize, hi: usize| rng.int_inclusive(lo as i64, hi as i64) as usize;
    for case in 0..400 {
        let (w, h) = if case % 4 == 0 {
            (pick(1, 12), pick(1, 12))
        } else {
            (pick(1, 160), pick(1, 120))
        };
        let data = (0..w * h * 3).map(|_| pick(0, 255) as u8).collect();
        let img = RgbImage::new(w, h, data).unwrap();
        let (sw, sh) = (pick(1, w), pick(1, h));
        // Often flush with the right and bottom edges, where the image data ends.
        let sx = if case % 3 == 0 {
            w - sw
        } else {
            pick(0, w - sw)
        };
        let sy = if case % 5 == 0 {
            h - sh
        } else {
            pick(0, h - sh)
        };
        let src = Rect {
            x: sx,
            y: sy,
            width: sw,
            height: sh,
        };
        // Downscaling (up to ~10x) and upscaling (up to ~4x).
        let out_w = pick(1, (4 * sw).clamp(1, 130));
        let out_h = pick(1, (4 * sh).clamp(1, 130));
        let (ww, wh) = (pick(1, out_w), pick(1, out_h));
        let window = Rect {
            x: pick(0, out_w - ww),
            y: pick(0, out_h - wh),
            width: ww,
            height: wh,
        };
        for filter in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for flip in [false, true] {
                let expect = reference(&img, src, out_w, out_h, window, filter, flip);
                for simd in [false, true] {
                    let got = resample_with(&img, src, out_w, out_h, window, filter, flip, simd);
                    assert!(
                        got == expect,
                        "case {case}: {w}x{h} {src:?} -> {out_w}x{out_h} {window:?} \
                         {filter:?} flip {flip} simd {simd}"
                    );
                }
            }
        }
    }
}

#[test]
fn matches_reference_on_photo_sized_crops() {
    // RandomResizedCrop-like work: large crops of a 512x384 image to 224x224.
    let mut rng = crate::Rng::from_seed(3);
    let (w, h) = (512, 384);
    let data = (0..w * h * 3)
        .map(|i| ((i / 3 % w + i / 3 / w) as u8).wrapping_mul(7) ^ (rng.below(64) as u8))
        .collect();
    let img = RgbImage::new(w, h, data).unwrap();
    for case in 0..12 {
        let sw = 50 + rng.below((w - 50) as u64) as usize;
        let sh = 50 + rng.below((h - 50) as u64) as usize;
        let src = Rect {
            x: rng.below((w - sw + 1) as u64) as usize,
            y: rng.below((h - sh + 1) as u64) as usize,
            width: sw,
            height: sh,
        };
        let full = Rect {
            x: 0,
            y: 0,
            width: 224,
            height: 224,
        };
        for filter in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let flip = case % 2 == 1;
            let expect = reference(&img, src, 224, 224, full, filter, flip);
            for simd in [false, true] {
                let got = resample_with(&img, src, 224, 224, full, filter, flip, simd);
                assert!(got == expect, "case {case}: {src:?} {filter:?} simd {simd}");
            }
        }
    }
}
