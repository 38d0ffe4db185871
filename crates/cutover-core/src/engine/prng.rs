//! A tiny deterministic pseudo-random generator (SplitMix64) for the
//! simulator and the tests: same seed, same fleet, same run.

/// SplitMix64 (Steele, Lea, Flood 2014): one u64 of state, good enough
/// statistics for simulating delays and failures, and no dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + ((u128::from(self.next_u64()) * u128::from(high - low)) >> 64) as u64
    }

    /// True with probability `parts_per_million / 1_000_000`.
    pub fn chance_ppm(&mut self, parts_per_million: u32) -> bool {
        self.range(0, 1_000_000) < u64::from(parts_per_million)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_spread() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut hits = 0;
        for _ in 0..100_000 {
            if a.chance_ppm(150_000) {
                hits += 1;
            }
            let r = a.range(10, 20);
            assert!((10..20).contains(&r));
        }
        assert!((14_000..16_000).contains(&hits), "{hits}");
    }
}
