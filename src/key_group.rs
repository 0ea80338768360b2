//! Key groups: the unit of partitioning, snapshot layout and rescaling.
//!
//! A key's group is `murmur3_x86_32(serialized key bytes, seed 0) % max_parallelism`. The hash
//! is part of the on-disk contract (snapshots are laid out by key group), so it is fixed
//! forever and pinned by golden vectors in the tests below; DESIGN.md describes it byte by byte.
//!
//! ```
//! use keyed_state::key_group::{KeyGroupRange, key_group_for_bytes, range_for_operator};
//! let group = key_group_for_bytes(b"hello", 128);
//! assert_eq!(u32::from(group), 0x248b_fa47 % 128);
//! let r = range_for_operator(128, 3, 1).unwrap();
//! assert_eq!((r.start(), r.end()), (43, 85));
//! assert!(r.contains(group) == (43..=85).contains(&group));
//! ```

use std::fmt;

use crate::error::ConfigError;

/// The largest allowed `max_parallelism` (number of key groups): `2^15`.
pub const MAX_PARALLELISM_UPPER_BOUND: u32 = 1 << 15;
/// The default `max_parallelism`.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

// Key groups are stored in a u16 everywhere; the bound must fit.
const _: () = assert!(MAX_PARALLELISM_UPPER_BOUND - 1 <= u16::MAX as u32);

/// Checks that `max_parallelism` lies in `1..=32768`.
///
/// # Errors
///
/// [`ConfigError::MaxParallelism`] outside `1..=32768`.
pub fn check_max_parallelism(max_parallelism: u32) -> Result<(), ConfigError> {
    if (1..=MAX_PARALLELISM_UPPER_BOUND).contains(&max_parallelism) {
        Ok(())
    } else {
        Err(ConfigError::MaxParallelism(max_parallelism))
    }
}

/// MurmurHash3, x86 32-bit variant, seed 0, over `data` (Austin Appleby's reference algorithm:
/// 4-byte little-endian blocks, then the 1-3 byte tail, then `len` xor and the fmix32 finaliser).
///
/// Written here rather than taken from a crate because it is part of the on-disk format: its
/// output must never change with a dependency upgrade. Golden vectors pin it.
#[inline]
pub fn murmur3_32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h: u32 = 0;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, b) in tail.iter().enumerate() {
            k ^= u32::from(*b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    // The reference takes the length as a 32-bit int: longer inputs wrap (documented).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "MurmurHash3 mixes in the length modulo 2^32, as the reference does"
    )]
    let len = data.len() as u32;
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The key group of a key given its serialized bytes.
///
/// `max_parallelism` must lie in `1..=32768` (callers obtain it from a validated backend;
/// checked in debug builds, and clamped into that domain otherwise, so the group always fits).
#[inline]
pub fn key_group_for_bytes(key_bytes: &[u8], max_parallelism: u32) -> u16 {
    debug_assert!(check_max_parallelism(max_parallelism).is_ok());
    let m = max_parallelism.clamp(1, MAX_PARALLELISM_UPPER_BOUND);
    // Below m ≤ 2^15: always fits.
    u16::try_from(murmur3_32(key_bytes) % m).unwrap_or(u16::MAX)
}

/// `n % max_parallelism` without a division: a backend resolves a key per record, and the
/// 32-bit `div` of `%` by a divisor known only at run time drew a third of the samples of a
/// key's resolution (DESIGN.md §9, "Key resolution"). Lemire, Kaser and Kurz's "fastmod"
/// (2019): with `magic = ⌊(2^64 − 1) / m⌋ + 1` (mod 2^64), `n % m` is the high 64 bits of
/// `(magic · n mod 2^64) · m`, exact for every 32-bit `n` and `m` ≥ 1 (tested against `%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyGroupDivisor {
    max_parallelism: u32,
    magic: u64,
}

impl KeyGroupDivisor {
    /// The divisor for `max_parallelism` key groups.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxParallelism`] outside `1..=32768`.
    pub(crate) fn new(max_parallelism: u32) -> Result<Self, ConfigError> {
        check_max_parallelism(max_parallelism)?;
        Ok(Self::of_checked(max_parallelism))
    }

    /// The divisor for [`DEFAULT_MAX_PARALLELISM`].
    pub(crate) const DEFAULT: KeyGroupDivisor = Self::of_checked(DEFAULT_MAX_PARALLELISM);

    /// The divisor for a `max_parallelism` in `1..=32768`.
    const fn of_checked(max_parallelism: u32) -> Self {
        assert!(max_parallelism >= 1 && max_parallelism <= MAX_PARALLELISM_UPPER_BOUND);
        KeyGroupDivisor {
            max_parallelism,
            magic: (u64::MAX / max_parallelism as u64).wrapping_add(1),
        }
    }

    /// The number of key groups.
    #[inline]
    pub(crate) fn max_parallelism(self) -> u32 {
        self.max_parallelism
    }

    /// `n % max_parallelism`.
    #[inline]
    fn rem(self, n: u32) -> u32 {
        let low = self.magic.wrapping_mul(u64::from(n));
        let rem = (u128::from(low) * u128::from(self.max_parallelism)) >> 64;
        // Below `max_parallelism`, so it fits.
        u32::try_from(rem).unwrap_or(u32::MAX)
    }

    /// [`key_group_for_bytes`] for this divisor's `max_parallelism`.
    #[inline]
    pub(crate) fn key_group(self, key_bytes: &[u8]) -> u16 {
        // Below `max_parallelism` ≤ 2^15: always fits.
        u16::try_from(self.rem(murmur3_32(key_bytes))).unwrap_or(u16::MAX)
    }
}

/// The operator index (of `parallelism`) that owns `group`: `group * p / M` (Flink's formula).
pub fn operator_for_key_group(max_parallelism: u32, parallelism: u32, group: u16) -> u32 {
    debug_assert!(parallelism >= 1 && parallelism <= max_parallelism);
    (u32::from(group) * parallelism) / max_parallelism
}

/// The key-group range owned by operator `index` of `parallelism`, for `max_parallelism` groups:
/// `start = ceil(i·M / p)`, `end = ceil((i+1)·M / p) − 1` (Flink's formula).
///
/// # Errors
///
/// [`ConfigError::MaxParallelism`],
/// [`ConfigError::Parallelism`] outside `1..=max_parallelism`,
/// [`ConfigError::OperatorIndex`] not below `parallelism`.
pub fn range_for_operator(
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
) -> Result<KeyGroupRange, ConfigError> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(ConfigError::Parallelism {
            parallelism,
            max_parallelism,
        });
    }
    if index >= parallelism {
        return Err(ConfigError::OperatorIndex { index, parallelism });
    }
    // u64: i·M reaches 2^30 at most, but keep the arithmetic obviously overflow-free.
    let (m, p, i) = (
        u64::from(max_parallelism),
        u64::from(parallelism),
        u64::from(index),
    );
    let start = (i * m).div_ceil(p);
    let end_exclusive = ((i + 1) * m).div_ceil(p);
    assert!(start < end_exclusive, "p <= M gives every operator a group");
    // Both are below M ≤ 2^15 (checked above).
    let group = |g: u64| u16::try_from(g).map_err(|_| ConfigError::MaxParallelism(max_parallelism));
    Ok(KeyGroupRange::new(group(start)?, group(end_exclusive - 1)?))
}

/// An inclusive range of key groups `start..=end`; may be empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    // Invariant: empty ranges are stored canonically as start = 1, end = 0.
    start: u16,
    end: u16,
}

impl KeyGroupRange {
    /// The empty range.
    pub const EMPTY: KeyGroupRange = KeyGroupRange { start: 1, end: 0 };

    /// The range `start..=end`; empty when `end < start`.
    pub fn new(start: u16, end: u16) -> Self {
        if end < start {
            Self::EMPTY
        } else {
            KeyGroupRange { start, end }
        }
    }

    /// All `max_parallelism` key groups `0..max_parallelism`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxParallelism`] outside `1..=32768`.
    pub fn all(max_parallelism: u32) -> Result<Self, ConfigError> {
        check_max_parallelism(max_parallelism)?;
        let end = u16::try_from(max_parallelism - 1)
            .map_err(|_| ConfigError::MaxParallelism(max_parallelism))?;
        Ok(KeyGroupRange::new(0, end))
    }

    /// First group (meaningless for an empty range).
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last group, inclusive (meaningless for an empty range).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether the range holds no group.
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// Number of groups in the range.
    pub fn len(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            usize::from(self.end - self.start) + 1
        }
    }

    /// Whether `group` lies in the range.
    pub fn contains(&self, group: u16) -> bool {
        self.start <= group && group <= self.end
    }

    /// The position of `group` within the range, if it lies in it.
    pub fn index_of(&self, group: u16) -> Option<usize> {
        self.contains(group)
            .then(|| usize::from(group - self.start))
    }

    /// The groups both ranges hold (commutative; disjoint ranges give [`KeyGroupRange::EMPTY`]).
    #[must_use]
    pub fn intersect(&self, other: &KeyGroupRange) -> KeyGroupRange {
        KeyGroupRange::new(self.start.max(other.start), self.end.min(other.end))
    }

    /// Iterates the groups in ascending order.
    pub fn iter(&self) -> KeyGroupIter {
        // Empty ranges are stored as 1..=0: an empty inclusive range.
        self.start..=self.end
    }

    /// Checks that every group of the range is below `max_parallelism`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::RangeOutsideMaxParallelism`],
    /// or [`ConfigError::MaxParallelism`] outside
    /// `1..=32768`.
    pub fn check_fits(&self, max_parallelism: u32) -> Result<(), ConfigError> {
        check_max_parallelism(max_parallelism)?;
        if self.is_empty() || u32::from(self.end) < max_parallelism {
            Ok(())
        } else {
            Err(ConfigError::RangeOutsideMaxParallelism {
                range: *self,
                max_parallelism,
            })
        }
    }
}

/// The groups of a [`KeyGroupRange`], ascending.
pub type KeyGroupIter = std::ops::RangeInclusive<u16>;

impl IntoIterator for KeyGroupRange {
    type Item = u16;
    type IntoIter = KeyGroupIter;
    fn into_iter(self) -> KeyGroupIter {
        self.iter()
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "[empty]")
        } else {
            write!(f, "[{}..={}]", self.start, self.end)
        }
    }
}

impl fmt::Debug for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyGroupRange{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use proptest::prelude::*;

    /// Reference values from an independent implementation (Python `mmh3.hash(data, 0)`).
    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(murmur3_32(b""), 0);
        assert_eq!(murmur3_32(b"a"), 0x3c25_69b2);
        assert_eq!(murmur3_32(b"hello"), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    fn group_of<K: Codec>(key: &K, m: u32) -> u16 {
        let mut bytes = Vec::new();
        key.encode(&mut bytes);
        key_group_for_bytes(&bytes, m)
    }

    /// Golden vectors: the key-group assignment is part of the snapshot format and must never
    /// change. Each expectation is `mmh3.hash(encoded key, 0, signed=False) % M`.
    #[test]
    fn key_group_golden_vectors() {
        let cases_u64: [(u64, u16, u16); 4] = [
            (0, 124, 11004),
            (1, 126, 15742),
            (42, 55, 11063),
            (u64::MAX, 104, 25832),
        ];
        for (key, g128, g32768) in cases_u64 {
            assert_eq!(group_of(&key, 128), g128, "u64 {key} M=128");
            assert_eq!(group_of(&key, 32768), g32768, "u64 {key} M=32768");
        }
        let cases_str: [(&str, u16, u16); 4] = [
            ("", 0, 0),
            ("a", 50, 27058),
            ("hello", 71, 31303),
            ("user-17", 105, 25321),
        ];
        for (key, g128, g32768) in cases_str {
            assert_eq!(group_of(&key.to_string(), 128), g128, "{key:?} M=128");
            assert_eq!(group_of(&key.to_string(), 32768), g32768, "{key:?} M=32768");
        }
        // Signed keys go through the order-preserving encoding (sign bit flipped) first.
        assert_eq!(group_of(&-1i64, 128), 6);
        assert_eq!(group_of(&-1i64, 32768), 14086);
    }

    #[test]
    fn flink_range_examples() {
        let r = |m, p, i| range_for_operator(m, p, i).unwrap();
        assert_eq!((r(128, 3, 0).start(), r(128, 3, 0).end()), (0, 42));
        assert_eq!((r(128, 3, 1).start(), r(128, 3, 1).end()), (43, 85));
        assert_eq!((r(128, 3, 2).start(), r(128, 3, 2).end()), (86, 127));
        assert_eq!((r(10, 3, 0).start(), r(10, 3, 0).end()), (0, 3));
        assert_eq!((r(10, 3, 1).start(), r(10, 3, 1).end()), (4, 6));
        assert_eq!((r(10, 3, 2).start(), r(10, 3, 2).end()), (7, 9));
        assert_eq!(r(32768, 1, 0), KeyGroupRange::all(32768).unwrap());
    }

    #[test]
    fn bad_configuration_is_a_typed_error() {
        assert_eq!(
            range_for_operator(0, 1, 0),
            Err(ConfigError::MaxParallelism(0))
        );
        assert_eq!(
            range_for_operator(32769, 1, 0),
            Err(ConfigError::MaxParallelism(32769))
        );
        assert!(matches!(
            range_for_operator(8, 9, 0),
            Err(ConfigError::Parallelism { .. })
        ));
        assert!(matches!(
            range_for_operator(8, 0, 0),
            Err(ConfigError::Parallelism { .. })
        ));
        assert!(matches!(
            range_for_operator(8, 2, 2),
            Err(ConfigError::OperatorIndex { .. })
        ));
        assert!(KeyGroupRange::new(0, 128).check_fits(128).is_err());
        assert!(KeyGroupRange::new(0, 127).check_fits(128).is_ok());
    }

    #[test]
    fn range_basics() {
        let r = KeyGroupRange::new(3, 6);
        assert_eq!(r.len(), 4);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        assert!(r.contains(3) && r.contains(6) && !r.contains(2) && !r.contains(7));
        assert_eq!(r.index_of(5), Some(2));
        assert_eq!(r.index_of(7), None);
        assert_eq!(
            r.intersect(&KeyGroupRange::new(5, 10)),
            KeyGroupRange::new(5, 6)
        );
        assert_eq!(
            r.intersect(&KeyGroupRange::new(7, 10)),
            KeyGroupRange::EMPTY
        );
        assert!(KeyGroupRange::new(5, 4).is_empty());
        assert_eq!(KeyGroupRange::new(9, 2), KeyGroupRange::EMPTY);
        assert_eq!(KeyGroupRange::EMPTY.len(), 0);
        assert_eq!(KeyGroupRange::EMPTY.iter().count(), 0);
        assert!(!KeyGroupRange::EMPTY.contains(0) && !KeyGroupRange::EMPTY.contains(1));
        assert_eq!(format!("{r}"), "[3..=6]");
    }

    proptest! {
        /// For every M and p <= M the p ranges are contiguous, non-empty, and partition 0..M,
        /// and every group maps back to the operator that owns it.
        #[test]
        fn operator_ranges_partition_all_groups(m in 1u32..=32768, p_seed in any::<u32>()) {
            let p = 1 + p_seed % m;
            let mut next = 0u32;
            for i in 0..p {
                let r = range_for_operator(m, p, i).unwrap();
                prop_assert!(!r.is_empty());
                prop_assert_eq!(u32::from(r.start()), next);
                prop_assert_eq!(operator_for_key_group(m, p, r.start()), i);
                prop_assert_eq!(operator_for_key_group(m, p, r.end()), i);
                next = u32::from(r.end()) + 1;
            }
            prop_assert_eq!(next, m);
        }

        #[test]
        fn small_m_exhaustive_partition(m in 1u32..=64) {
            for p in 1..=m {
                let mut owner = vec![u32::MAX; m as usize];
                for i in 0..p {
                    for g in range_for_operator(m, p, i).unwrap().iter() {
                        prop_assert_eq!(owner[g as usize], u32::MAX, "group owned twice");
                        owner[g as usize] = i;
                    }
                }
                prop_assert!(owner.iter().all(|&o| o != u32::MAX));
            }
        }

        #[test]
        fn intersection_is_commutative_and_exact(a in 0u16..100, b in 0u16..100, c in 0u16..100, d in 0u16..100) {
            let (x, y) = (KeyGroupRange::new(a, b), KeyGroupRange::new(c, d));
            prop_assert_eq!(x.intersect(&y), y.intersect(&x));
            let both: Vec<u16> = x.iter().filter(|g| y.contains(*g)).collect();
            prop_assert_eq!(x.intersect(&y).iter().collect::<Vec<_>>(), both);
        }

        #[test]
        fn key_group_is_below_m(bytes in proptest::collection::vec(any::<u8>(), 0..64), m in 1u32..=32768) {
            prop_assert!(u32::from(key_group_for_bytes(&bytes, m)) < m);
        }

        #[test]
        fn divisor_remainder_is_the_remainder(n in any::<u32>(), m in 1u32..=32768) {
            let divisor = KeyGroupDivisor::new(m).unwrap();
            prop_assert_eq!(divisor.rem(n), n % m);
        }

        #[test]
        fn divisor_key_group_is_key_group_for_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            m in 1u32..=32768,
        ) {
            let divisor = KeyGroupDivisor::new(m).unwrap();
            prop_assert_eq!(divisor.key_group(&bytes), key_group_for_bytes(&bytes, m));
        }
    }

    /// Every allowed divisor, at the numerators where a wrong magic number shows first: the
    /// ends of the range and the multiples of `m` and their neighbours near them.
    #[test]
    fn divisor_is_exact_for_every_max_parallelism() {
        for m in 1..=MAX_PARALLELISM_UPPER_BOUND {
            let divisor = KeyGroupDivisor::new(m).unwrap();
            let top = u32::MAX - u32::MAX % m;
            let edges = [
                0,
                1,
                m - 1,
                m,
                m + 1,
                2 * m - 1,
                top - 1,
                top,
                u32::MAX - 1,
                u32::MAX,
            ];
            let spread = (0..64u32).map(|i| i.wrapping_mul(0x9e37_79b9) ^ m);
            for n in edges.into_iter().chain(spread) {
                assert_eq!(divisor.rem(n), n % m, "{n} % {m}");
            }
        }
        assert_eq!(
            KeyGroupDivisor::DEFAULT,
            KeyGroupDivisor::new(DEFAULT_MAX_PARALLELISM).unwrap()
        );
        assert!(KeyGroupDivisor::new(0).is_err());
        assert!(KeyGroupDivisor::new(MAX_PARALLELISM_UPPER_BOUND + 1).is_err());
    }
}
