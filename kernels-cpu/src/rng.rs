//! Counter-based random numbers: `hash(seed, index)` rather than a stateful stream.
//!
//! Why counter-based: a seeded op such as dropout must draw the same mask on every backend
//! and thread split. With a pure function of `(seed, index)` a GPU invocation, a CPU thread
//! and the reference loop all agree without sharing state. The mixer is SplitMix64's
//! finaliser (Steele, Lea, Flood 2014), which passes BigCrush when fed a counter.

/// SplitMix64 finaliser: a bijective 64-bit mix.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `index`-th 32-bit draw of stream `seed`.
#[inline]
pub fn hash_u32(seed: u64, index: u64) -> u32 {
    (mix64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix64(index)) >> 32) as u32
}

/// The `index`-th draw of stream `seed`, uniform in `[0, 1)` with 24 bits of precision
/// (exactly representable in f32, so every backend compares the same number).
#[inline]
pub fn uniform(seed: u64, index: u64) -> f32 {
    (hash_u32(seed, index) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A small sequential generator over the counter hash, for tests and initialisers.
#[derive(Debug, Clone)]
pub struct Rng {
    seed: u64,
    counter: u64,
}

impl Rng {
    /// A generator for stream `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// Next raw 32-bit draw.
    pub fn next_u32(&mut self) -> u32 {
        let v = hash_u32(self.seed, self.counter);
        self.counter = self.counter.wrapping_add(1);
        v
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        ((hi << 21) ^ lo) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `[lo, hi]` (inclusive).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u32() as usize) % (hi - lo + 1)
    }

    /// Standard normal draw (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_spread() {
        let n = 100_000;
        let mut sum = 0.0f64;
        for i in 0..n {
            let u = uniform(7, i);
            assert!((0.0..1.0).contains(&u));
            sum += f64::from(u);
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(hash_u32(1, 5), hash_u32(1, 5));
        assert_ne!(hash_u32(1, 5), hash_u32(2, 5));
        assert_ne!(hash_u32(1, 5), hash_u32(1, 6));
    }
}
