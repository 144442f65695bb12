//! timm `RandomErasing` on the normalized `f32` CHW sample (after Normalize), as DeiT configures it:
//! `--reprob 0.25 --remode pixel --recount 1`.
//!
//! With probability `prob`: up to 10 tries of (area fraction ~ U(min_area, max_area) / count,
//! aspect ~ exp(U(log min_aspect, log max_aspect))), `h = round(sqrt(area * aspect))`,
//! `w = round(sqrt(area / aspect))`; the first box with `w < W` and `h < H` is placed uniformly and
//! filled with standard normal noise per pixel and channel ('pixel' mode), or per channel ('rand'),
//! or zeros ('const'). Repeated for each of `count` boxes.

use crate::rng::Rng;

/// What fills an erased box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraseMode {
    /// Zeros (the dataset mean after normalization).
    Const,
    /// One normal value per channel.
    Rand,
    /// Independent normal values per pixel and channel (DeiT).
    Pixel,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RandomErasing {
    pub prob: f64,
    pub min_area: f64,
    pub max_area: f64,
    pub min_aspect: f64,
    pub max_aspect: f64,
    pub mode: EraseMode,
    pub min_count: usize,
    pub max_count: usize,
}

/// One erased box (for tests and logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraseBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl RandomErasing {
    /// DeiT: probability 0.25, 'pixel' mode, one box, area 2%-33%, aspect 0.3-3.3.
    pub fn deit() -> RandomErasing {
        RandomErasing {
            prob: 0.25,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            min_aspect: 0.3,
            max_aspect: 1.0 / 0.3,
            mode: EraseMode::Pixel,
            min_count: 1,
            max_count: 1,
        }
    }

    /// Erases in place in a `[channels, height, width]` sample; returns the boxes drawn.
    pub fn apply(
        &self,
        sample: &mut [f32],
        channels: usize,
        height: usize,
        width: usize,
        rng: &mut Rng,
    ) -> Vec<EraseBox> {
        debug_assert_eq!(sample.len(), channels * height * width);
        let mut boxes = Vec::new();
        if rng.uniform() > self.prob {
            return boxes;
        }
        let area = (height * width) as f64;
        let count = if self.min_count >= self.max_count {
            self.min_count
        } else {
            rng.int_inclusive(self.min_count as i64, self.max_count as i64) as usize
        };
        let (log_lo, log_hi) = (self.min_aspect.ln(), self.max_aspect.ln());
        for _ in 0..count {
            for _ in 0..10 {
                let target = rng.uniform_range(self.min_area, self.max_area) * area / count as f64;
                let aspect = rng.uniform_range(log_lo, log_hi).exp();
                // Python's round() rounds half to even.
                let h = (target * aspect).sqrt().round_ties_even() as usize;
                let w = (target / aspect).sqrt().round_ties_even() as usize;
                if w < width && h < height {
                    let top = rng.int_inclusive(0, (height - h) as i64) as usize;
                    let left = rng.int_inclusive(0, (width - w) as i64) as usize;
                    self.fill(
                        sample,
                        channels,
                        height,
                        width,
                        EraseBox {
                            top,
                            left,
                            height: h,
                            width: w,
                        },
                        rng,
                    );
                    boxes.push(EraseBox {
                        top,
                        left,
                        height: h,
                        width: w,
                    });
                    break;
                }
            }
        }
        boxes
    }

    fn fill(
        &self,
        sample: &mut [f32],
        channels: usize,
        height: usize,
        width: usize,
        b: EraseBox,
        rng: &mut Rng,
    ) {
        for c in 0..channels {
            let channel_value = match self.mode {
                EraseMode::Const => 0.0,
                EraseMode::Rand => rng.normal() as f32,
                EraseMode::Pixel => 0.0,
            };
            for y in b.top..b.top + b.height {
                let row = &mut sample[c * height * width + y * width + b.left..][..b.width];
                for v in row.iter_mut() {
                    *v = if self.mode == EraseMode::Pixel {
                        rng.normal() as f32
                    } else {
                        channel_value
                    };
                }
            }
        }
    }
}
