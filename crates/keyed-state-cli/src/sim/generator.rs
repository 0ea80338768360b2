//! The seeded input stream: events with a user key, a type, an amount and an event timestamp
//! with bounded disorder.

/// SplitMix64: a tiny, well-known generator whose output is fixed by the seed forever (the
/// simulator's digests depend on that, so it is spelled out here rather than taken from a
/// crate whose algorithm may change between versions).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `0..n` as a `u32` (the same draw as [`below`](Self::below)).
    pub fn below_u32(&mut self, n: u32) -> u32 {
        u32::try_from(self.below(u64::from(n))).unwrap_or(0) // below n: always fits
    }

    /// A uniform index into a slice of `len` items (the same draw as [`below`](Self::below)).
    pub fn index(&mut self, len: usize) -> usize {
        let n = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.below(n)).unwrap_or(0) // below len: always fits
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How user keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Skew {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent `s`: key i (from 0) has weight `1 / (i + 1)^s`.
    Zipf(f64),
}

/// The share of positions, in percent, that re-deliver an earlier event.
pub const DUPLICATE_PERCENT: u64 = 2;
/// How far back a re-delivered event may come from, in positions: further than the 24-hour
/// de-duplication TTL spans (2,880 positions), so some duplicates arrive after it expired.
pub const DUPLICATE_DISTANCE: u64 = 4_000;

/// One input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The event id (the position of its first delivery).
    pub id: u64,
    /// The user key.
    pub user: u64,
    /// The event type, `0..4`.
    pub kind: u8,
    /// The amount, `1..=200` mostly, `1000..5000` for 3% of events.
    pub amount: u64,
    /// Event time, ms.
    pub ts: u64,
}

/// The stream: event `i` is a pure function of the seed and `i` (so replay after a crash
/// regenerates the same events from any offset).
#[derive(Debug, Clone)]
pub struct Generator {
    seed: u64,
    keys: u64,
    /// Zipf's cumulative weights (empty for uniform).
    cdf: Vec<f64>,
    /// Mean gap between events in event time, ms.
    gap_ms: u64,
    /// Largest backwards jitter of an event's timestamp, ms.
    disorder_ms: u64,
}

impl Generator {
    /// A stream over `keys` users.
    pub fn new(seed: u64, keys: u64, skew: Skew, gap_ms: u64, disorder_ms: u64) -> Self {
        let cdf = match skew {
            Skew::Uniform => Vec::new(),
            Skew::Zipf(s) => {
                let mut total = 0.0;
                (0..keys)
                    .map(|i| {
                        total += 1.0 / ((i + 1) as f64).powf(s);
                        total
                    })
                    .collect()
            }
        };
        Generator {
            seed,
            keys: keys.max(1),
            cdf,
            gap_ms,
            disorder_ms,
        }
    }

    /// The event at position `i`: usually a fresh one with id `i`; with probability
    /// [`DUPLICATE_PERCENT`]% a re-delivery of the fresh event of an earlier position (same
    /// id, user, amount and timestamp) up to [`DUPLICATE_DISTANCE`] positions back.
    pub fn event(&self, i: u64) -> Event {
        let mut r = SplitMix64::new(self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd0b1);
        if i > 0 && r.below(100) < DUPLICATE_PERCENT {
            return self.fresh(i - 1 - r.below(i.min(DUPLICATE_DISTANCE)));
        }
        self.fresh(i)
    }

    fn fresh(&self, i: u64) -> Event {
        let mut r = SplitMix64::new(self.seed ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let user = match self.cdf.last() {
            None => r.below(self.keys),
            Some(&total) => {
                let x = r.unit() * total;
                self.cdf.partition_point(|&c| c < x) as u64
            }
        };
        let jitter = if self.disorder_ms == 0 {
            0
        } else {
            r.below(self.disorder_ms)
        };
        // Mostly small amounts, now and then a large one (what the spike rule looks for).
        let amount = if r.below(100) < 3 {
            1_000 + r.below(4_000)
        } else {
            1 + r.below(200)
        };
        Event {
            id: i,
            user: user.min(self.keys - 1),
            kind: u8::try_from(r.below(4)).unwrap_or(0), // below 4
            amount,
            ts: (i * self.gap_ms).saturating_sub(jitter),
        }
    }

    /// The largest backwards jitter: the watermark trails the largest timestamp by this much.
    pub fn disorder_ms(&self) -> u64 {
        self.disorder_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_a_function_of_seed_and_position() {
        let g = Generator::new(7, 100, Skew::Zipf(1.1), 1000, 5000);
        assert_eq!(g.event(42), g.event(42));
        assert_ne!(
            g.event(42),
            Generator::new(8, 100, Skew::Zipf(1.1), 1000, 5000).event(42)
        );
        let hot = (0..10_000).filter(|&i| g.event(i).user == 0).count();
        assert!(hot > 1000, "zipf makes key 0 hot: {hot}");
        let u = Generator::new(7, 100, Skew::Uniform, 1000, 0);
        assert!((0..10_000).all(|i| u.event(i).user < 100));
        assert!(
            (0..10_000)
                .map(|i| (i, u.event(i)))
                .all(|(i, e)| e.ts == e.id * 1000 && (e.id == i || e == u.fresh(e.id)))
        );
        let dups = (0..100_000).filter(|&i| u.event(i).id != i).count();
        assert!(
            (1_000..3_000).contains(&dups),
            "about 2% duplicates: {dups}"
        );
        let late = (0..100_000).filter(|&i| i - u.event(i).id > 2_880).count();
        assert!(
            late > 100,
            "some duplicates come after the dedup TTL: {late}"
        );
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }
}
