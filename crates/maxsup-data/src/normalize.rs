//! ToTensor + Normalize: 8-bit interleaved RGB to planar (CHW) `f32`, `(v / 255 - mean[c]) /
//! std[c]`. It runs once per sample on every path, over the whole output: on the JPEG loader path it
//! was ~6% of a sample's time as a per-pixel lookup table, so x86-64 gets an AVX2 version that
//! computes the same IEEE operations on 8 pixels at a time (bit-identical, tested).

use crate::image::RgbImage;

/// Writes `img` normalized into `out` (`3 * width * height` values: all R, then all G, then all B).
pub fn normalize_into(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = img.width * img.height;
    assert_eq!(out.len(), 3 * plane, "output is not 3 x {plane} values");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2; lengths checked above (the image holds 3 * plane bytes).
        unsafe { avx2::normalize(&img.data, mean, std, out) };
        return;
    }
    normalize_portable(&img.data, mean, std, out);
}

/// Writes `img`'s interleaved pixels as planes into `out` (`3 * width * height` bytes: all R,
/// then all G, then all B), the layout [`normalize_into`] writes, not yet normalized.
pub(crate) fn planar_into(img: &RgbImage, out: &mut [u8]) {
    let plane = img.width * img.height;
    assert_eq!(out.len(), 3 * plane, "output is not 3 x {plane} bytes");
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.data.chunks_exact(3).take(plane).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
}

/// Normalizes planar 8-bit pixels (`planes.len() / 3` per channel) into `out`, with the same
/// arithmetic as [`normalize_into`]: the values it would have written from the same image.
pub fn normalize_planes(planes: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    assert_eq!(planes.len(), out.len(), "one output value per pixel byte");
    let plane = planes.len() / 3;
    for c in 0..3 {
        let lut: [f32; 256] = std::array::from_fn(|v| value(v as u8, mean[c], std[c]));
        let range = c * plane..(c + 1) * plane;
        for (o, &v) in out[range.clone()].iter_mut().zip(&planes[range]) {
            *o = lut[v as usize];
        }
    }
}

/// The value of byte `v` in channel `c`, the formula both paths compute.
#[inline(always)]
fn value(v: u8, mean: f32, std: f32) -> f32 {
    (v as f32 / 255.0 - mean) / std
}

/// Portable path: a 256-entry table per channel.
fn normalize_portable(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = out.len() / 3;
    let lut: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| value(v as u8, mean[c], std[c])));
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in data.chunks_exact(3).take(plane).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// 8 pixels per step: two overlapping 16-byte loads cover their 24 bytes, byte shuffles pick
    /// each channel's 8 bytes, which are widened to `f32` and normalized with vector `div` and
    /// `sub` (the same correctly rounded operations as the scalar formula). The last `plane % 8`
    /// pixels go through the scalar formula.
    ///
    /// # Safety
    /// AVX2 available; `data.len() >= 3 * plane` where `out.len() == 3 * plane`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn normalize(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
        let plane = out.len() / 3;
        assert!(data.len() >= 3 * plane);
        // Channel c of pixels 0-5 is at bytes 3p + c of the first load (bytes 0-15); pixels 6-7
        // at bytes 3p + c - 8 of the second (bytes 8-23). -1 gives a zero byte.
        let pick = |c: usize, lo: bool| -> __m128i {
            let m: [i8; 16] = std::array::from_fn(|i| {
                let byte = 3 * i + c;
                match (i < 8, lo) {
                    (true, true) if byte < 16 => byte as i8,
                    (true, false) if byte >= 16 => (byte - 8) as i8,
                    _ => -1,
                }
            });
            // SAFETY: 16 bytes.
            unsafe { _mm_loadu_si128(m.as_ptr() as *const __m128i) }
        };
        let lo: [__m128i; 3] = std::array::from_fn(|c| pick(c, true));
        let hi: [__m128i; 3] = std::array::from_fn(|c| pick(c, false));
        let scale = _mm256_set1_ps(255.0);
        let means: [__m256; 3] = std::array::from_fn(|c| _mm256_set1_ps(mean[c]));
        let stds: [__m256; 3] = std::array::from_fn(|c| _mm256_set1_ps(std[c]));
        let mut p = 0;
        let (src, dst) = (data.as_ptr(), out.as_mut_ptr());
        while p + 8 <= plane {
            // SAFETY: bytes 3p .. 3p + 24 <= 3 * plane; outputs c * plane + p .. + 8 < 3 * plane.
            unsafe {
                let a = _mm_loadu_si128(src.add(3 * p) as *const __m128i);
                let b = _mm_loadu_si128(src.add(3 * p + 8) as *const __m128i);
                for c in 0..3 {
                    let bytes =
                        _mm_or_si128(_mm_shuffle_epi8(a, lo[c]), _mm_shuffle_epi8(b, hi[c]));
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
                    let v =
                        _mm256_div_ps(_mm256_sub_ps(_mm256_div_ps(v, scale), means[c]), stds[c]);
                    _mm256_storeu_ps(dst.add(c * plane + p), v);
                }
            }
            p += 8;
        }
        for q in p..plane {
            for c in 0..3 {
                out[c * plane + q] = super::value(data[3 * q + c], mean[c], std[c]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{IMAGENET_MEAN, IMAGENET_STD};

    #[test]
    fn matches_the_formula_bit_for_bit() {
        // Every byte value in every channel; odd sizes for the scalar tail; every 4-byte offset
        // of the output within a 32-byte line.
        for (w, h) in [(1, 1), (7, 3), (16, 16), (224, 224), (33, 5), (8, 1)] {
            let plane = w * h;
            let data: Vec<u8> = (0..plane * 3).map(|i| (i * 37 % 256) as u8).collect();
            let img = RgbImage::new(w, h, data.clone()).unwrap();
            let mut buf = vec![0f32; 3 * plane + 8];
            for off in 0..8 {
                let out = &mut buf[off..off + 3 * plane];
                out.fill(f32::NAN);
                normalize_into(&img, IMAGENET_MEAN, IMAGENET_STD, out);
                let mut portable = vec![0f32; 3 * plane];
                normalize_portable(&data, IMAGENET_MEAN, IMAGENET_STD, &mut portable);
                for i in 0..plane {
                    for c in 0..3 {
                        let v = data[3 * i + c] as f32;
                        let expect = (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                        let got = out[c * plane + i];
                        assert_eq!(
                            got.to_bits(),
                            expect.to_bits(),
                            "{w}x{h}+{off} px {i} c {c}"
                        );
                        assert_eq!(portable[c * plane + i].to_bits(), expect.to_bits());
                    }
                }
            }
        }
    }
}
