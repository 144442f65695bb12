//! Seeded weight initialisers reproducing torchvision's and timm's schemes.
//!
//! Initial values are drawn on the host from a small seeded generator (SplitMix64 + Box-Muller)
//! so that a model built with the same seed is bit-identical on every run and device; candle's
//! CPU RNG cannot be seeded.

use maxsup_rng::SplitMix64;
use rayon::prelude::*;

/// How a freshly created parameter or buffer is filled.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Every element equals the constant.
    Const(f64),
    /// Normal(0, std): torchvision's `kaiming_normal_(mode="fan_out")` uses std = sqrt(2 / fan_out).
    Normal { std: f64 },
    /// Normal(0, std) truncated to [lo, hi] by resampling (timm's `trunc_normal_`, absolute bounds).
    TruncNormal { std: f64, lo: f64, hi: f64 },
    /// Uniform(-bound, bound): PyTorch's default Linear/Conv init gives bound = 1/sqrt(fan_in).
    Uniform { bound: f64 },
}

impl Init {
    /// timm's ViT init for Linear weights, `pos_embed` and `cls_token`: std 0.02 in [-2, 2].
    pub fn timm_trunc_normal() -> Self {
        Init::TruncNormal {
            std: 0.02,
            lo: -2.0,
            hi: 2.0,
        }
    }

    /// torchvision ResNet conv init: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
    pub fn kaiming_normal_fan_out(out_channels: usize, kernel_area: usize) -> Self {
        Init::Normal {
            std: (2.0 / (out_channels * kernel_area) as f64).sqrt(),
        }
    }

    /// PyTorch's default `nn.Linear`/`nn.Conv2d` init for weight and bias alike:
    /// `kaiming_uniform_(a=sqrt(5))` reduces to Uniform(±1/sqrt(fan_in)).
    pub fn torch_default(fan_in: usize) -> Self {
        Init::Uniform {
            bound: 1.0 / (fan_in.max(1) as f64).sqrt(),
        }
    }
}

/// Weight-init draws from SplitMix64 (the workspace's one generator): tiny, fast, good enough
/// for weight init, and fully reproducible.
#[derive(Debug, Clone)]
pub struct InitRng {
    bits: SplitMix64,
    /// Box-Muller yields normals in pairs; the second one waits here.
    spare_normal: Option<f64>,
}

impl InitRng {
    pub fn new(seed: u64) -> Self {
        Self {
            bits: SplitMix64::new(seed ^ 0x5DEE_CE66_D1CE_4E5B),
            spare_normal: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.bits.next_u64()
    }

    /// Uniform in the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.unit()
    }

    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn standard_normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let (u1, u2) = (self.unit(), self.unit());
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        self.spare_normal = Some(r * sin);
        r * cos
    }

    /// `n` values drawn according to `init`.
    ///
    /// Large tensors are generated in parallel: the tensor gets one seed from this generator
    /// and each fixed-size chunk its own stream derived from it, so the values do not depend on
    /// the number of threads.
    pub fn sample(&mut self, init: &Init, n: usize) -> Vec<f32> {
        const CHUNK: usize = 1 << 16;
        let tensor_seed = self.next_u64();
        let mut out = vec![0f32; n];
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| {
                let mut rng =
                    InitRng::new(tensor_seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
                rng.fill(init, chunk);
            });
        out
    }

    fn fill(&mut self, init: &Init, out: &mut [f32]) {
        match *init {
            Init::Const(c) => out.fill(c as f32),
            Init::Normal { std } => out
                .iter_mut()
                .for_each(|v| *v = (self.standard_normal() * std) as f32),
            Init::TruncNormal { std, lo, hi } => out.iter_mut().for_each(|v| {
                *v = loop {
                    let x = self.standard_normal() * std;
                    if (lo..=hi).contains(&x) {
                        break x as f32;
                    }
                }
            }),
            Init::Uniform { bound } => out
                .iter_mut()
                .for_each(|v| *v = ((2.0 * self.unit() - 1.0) * bound) as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_requested_moments() {
        let v = InitRng::new(1).sample(&Init::Normal { std: 0.5 }, 200_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
    }

    #[test]
    fn trunc_normal_respects_bounds_and_uniform_its_bound() {
        let mut rng = InitRng::new(2);
        let t = rng.sample(
            &Init::TruncNormal {
                std: 1.0,
                lo: -0.5,
                hi: 0.5,
            },
            10_000,
        );
        assert!(t.iter().all(|x| x.abs() <= 0.5));
        let u = rng.sample(&Init::Uniform { bound: 0.1 }, 10_000);
        assert!(u.iter().all(|x| x.abs() <= 0.1));
        assert!(u.iter().any(|&x| x > 0.09) && u.iter().any(|&x| x < -0.09));
    }

    #[test]
    fn same_seed_same_values() {
        let a = InitRng::new(7).sample(&Init::Normal { std: 1.0 }, 16);
        let b = InitRng::new(7).sample(&Init::Normal { std: 1.0 }, 16);
        assert_eq!(a, b);
    }
}
