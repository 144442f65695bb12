//! SplitMix64, the one small deterministic generator of the workspace: the loader hashes its
//! per-sample streams with it, the models draw their initial weights from it, and the linear
//! probe splits train/validation with it.
//!
//! WHY our own: outputs must be reproducible bit-for-bit on every machine and forever (seeded
//! weights, batches, the probe's split, which the scikit-learn benchmark re-implements in a few
//! lines of Python), without pinning a `rand` version whose streams could change.

/// SplitMix64 (Steele, Lea & Flood 2014). Python equivalent:
/// `s = (s + 0x9E3779B97F4A7C15) & M; z = s; z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M;
/// z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M; return z ^ (z >> 31)` with `M = 2**64 - 1`.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        Self::step(&mut self.state)
    }

    /// One SplitMix64 step on a bare state: advances `state` and returns the output. For hash
    /// constructions that mix other values into the state between steps.
    pub fn step(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) with 24 random bits (cheap, for bulk test data).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Standard normal via Box-Muller (one of the pair is discarded: simplicity over speed).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1], so ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher-Yates shuffle; index `j = next_u64() % (i + 1)` for `i` from `len-1` down to 1
    /// (the modulo bias is negligible and keeps the Python port exact).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_splitmix64_values() {
        // Reference values of SplitMix64 seeded with 0 (as published with the algorithm).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64::new(7).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
