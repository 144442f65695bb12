//! A small, versioned, deterministic random number generator.
//!
//! WHY our own: batches must be bit-identical for a given (seed, epoch) on every machine and for every
//! thread count, forever. We therefore derive an independent stream per sample from
//! `(seed, epoch, index, purpose)` by hashing (SplitMix64), and draw from xoshiro256++. Neither
//! algorithm depends on a third-party crate whose output could change between versions.

/// Distinct purposes get distinct streams so adding a draw in one place never shifts another.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// Per-sample augmentation (crop, flip, RandAugment, erasing).
    Sample = 1,
    /// Per-epoch shuffling of a shard.
    Shuffle = 2,
    /// Per-batch Mixup/CutMix parameters.
    Batch = 3,
}

use maxsup_rng::SplitMix64;

fn splitmix64(state: &mut u64) -> u64 {
    SplitMix64::step(state)
}

/// xoshiro256++ seeded from a hash of its coordinates.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for one (seed, epoch, index) coordinate of a given stream.
    pub fn derive(seed: u64, epoch: u64, index: u64, stream: Stream) -> Rng {
        let mut h = seed;
        let mut mix = 0u64;
        for v in [stream as u64, epoch, index] {
            mix = splitmix64(&mut h) ^ v.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            h ^= mix.rotate_left(17);
        }
        let mut state = h ^ mix;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Rng { s }
    }

    /// A generator seeded by a single value (tests, tools).
    pub fn from_seed(seed: u64) -> Rng {
        Rng::derive(seed, 0, 0, Stream::Sample)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); n must be > 0. Uses rejection to avoid modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Uniform integer in [lo, hi] (inclusive); requires lo <= hi.
    pub fn int_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal via Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Gamma(shape, 1) by Marsaglia-Tsang (with the shape < 1 boost).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = 1.0 - self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b) from two gammas (what numpy's `beta` samples).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_distinct_and_reproducible() {
        let a = Rng::derive(0, 1, 2, Stream::Sample).next_u64();
        assert_eq!(a, Rng::derive(0, 1, 2, Stream::Sample).next_u64());
        assert_ne!(a, Rng::derive(0, 1, 3, Stream::Sample).next_u64());
        assert_ne!(a, Rng::derive(0, 2, 2, Stream::Sample).next_u64());
        assert_ne!(a, Rng::derive(1, 1, 2, Stream::Sample).next_u64());
        assert_ne!(a, Rng::derive(0, 1, 2, Stream::Shuffle).next_u64());
    }

    #[test]
    fn moments_match_closed_forms() {
        let mut r = Rng::from_seed(7);
        let n = 200_000;
        let (mut su, mut sn, mut sn2, mut sb) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..n {
            su += r.uniform();
            let z = r.normal();
            sn += z;
            sn2 += z * z;
            sb += r.beta(0.8, 0.8);
        }
        let n = n as f64;
        assert!((su / n - 0.5).abs() < 0.005);
        assert!((sn / n).abs() < 0.01);
        assert!((sn2 / n - 1.0).abs() < 0.02);
        assert!((sb / n - 0.5).abs() < 0.005);
        // Beta(1,1) is uniform: mean 1/2, variance 1/12.
        let mut s2 = 0.0;
        for _ in 0..100_000 {
            let b = r.beta(1.0, 1.0);
            s2 += (b - 0.5) * (b - 0.5);
        }
        assert!((s2 / 100_000.0 - 1.0 / 12.0).abs() < 0.002);
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = Rng::from_seed(3);
        let mut seen = [false; 9];
        for _ in 0..1000 {
            let v = r.below(9) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
