//! Key groups: how keys map to subtasks, exactly as in Flink.
//!
//! * `max_parallelism` key groups exist for the life of an operator's state (default: the
//!   parallelism × 1.5 rounded up to a power of two, at least 128, at most 32 768).
//! * `key_group = murmur_mix(hash(key)) mod max_parallelism`.
//! * `subtask = key_group × parallelism / max_parallelism`, so each subtask owns a contiguous
//!   range of key groups and a restore at another parallelism hands out whole ranges.
//!
//! The key hash is computed by [`KeyHasher`], our own hasher with a fixed algorithm, so that a
//! key lands in the same key group in every process and every release: snapshots depend on it.
//! It feeds the key's `Hash` implementation; integers are hashed by value, so the result does
//! not depend on the machine's byte order.

use crate::types::KeyGroup;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Flink's lower bound for a derived max parallelism.
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;
/// The largest max parallelism (number of key groups) allowed.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The max parallelism Flink derives for an operator of the given parallelism:
/// `min(max(round_up_pow2(p + p / 2), 128), 32768)`.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::keygroup::default_max_parallelism;
/// assert_eq!(default_max_parallelism(1), 128);
/// assert_eq!(default_max_parallelism(100), 256);
/// assert_eq!(default_max_parallelism(30_000), 32_768);
/// ```
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = parallelism as u64;
    let wanted = (p + p / 2).max(1).next_power_of_two();
    wanted.clamp(
        DEFAULT_LOWER_BOUND_MAX_PARALLELISM as u64,
        UPPER_BOUND_MAX_PARALLELISM as u64,
    ) as u32
}

/// The stable hasher behind key groups and keyed state maps.
///
/// An Fx-style multiply-rotate mix per word with a murmur3 `fmix64` finish. Fast, deterministic
/// across processes, platforms and releases; not resistant to adversarial keys (no dataflow
/// hasher seeded per process could keep key groups stable).
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    state: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
/// Start state (digits of pi), so that no input hashes to the all-zero fixed point.
const INIT: u64 = 0x24_3f_6a_88_85_a3_08_d3;

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher { state: INIT }
    }
}

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

/// The first 8 bytes of `b` (which holds at least 8), little endian.
#[inline]
fn read_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// The first 4 bytes of `b` (which holds at least 4), little endian.
#[inline]
fn read_u32(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w) as u64
}

/// All of `b` (at most 8 bytes) as one word, for inputs of a known length: two overlapping
/// 4-byte reads, or three single bytes below 4 (as wyhash does).
#[inline]
fn read_small(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        (read_u32(b) << 32) | read_u32(&b[n - 4..])
    } else if n > 0 {
        ((b[0] as u64) << 16) | ((b[n / 2] as u64) << 8) | b[n - 1] as u64
    } else {
        0
    }
}

/// Murmur3's 64-bit finalizer: spreads every input bit over the output.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.state)
    }

    /// Folds the length, then the bytes in 8-byte words. Short inputs and the tail are read
    /// with fixed-size (overlapping) loads, never a variable-length copy: a `memcpy` call here
    /// measurably stalls the CPU between hash-table lookups (see `docs/BENCHMARKS.md`).
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        self.add(n as u64);
        if n <= 8 {
            self.add(read_small(bytes));
            return;
        }
        let mut rest = bytes;
        while rest.len() > 8 {
            self.add(read_u64(rest));
            rest = &rest[8..];
        }
        self.add(read_u64(&bytes[n - 8..]));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn write_i8(&mut self, i: i8) {
        self.add(i as u8 as u64);
    }
    #[inline]
    fn write_i16(&mut self, i: i16) {
        self.add(i as u16 as u64);
    }
    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(i as u32 as u64);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.add(i as u64);
    }
}

/// A `BuildHasher` for maps keyed like state: the same [`KeyHasher`] everywhere.
pub type KeyBuildHasher = BuildHasherDefault<KeyHasher>;

/// The stable 64-bit hash of a key.
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = KeyHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The key group of a key hash.
#[inline]
pub fn key_group_for_hash(hash: u64, max_parallelism: u32) -> KeyGroup {
    KeyGroup((hash % max_parallelism.max(1) as u64) as u32)
}

/// The key group of a key (Flink's `KeyGroupRangeAssignment.assignToKeyGroup`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::keygroup::{assign_to_key_group, operator_index_for_key_group};
/// let kg = assign_to_key_group("flink", 128);
/// assert!(kg.0 < 128);
/// // The same key always lands in the same group, in any process.
/// assert_eq!(kg, assign_to_key_group("flink", 128));
/// assert!(operator_index_for_key_group(128, 4, kg) < 4);
/// ```
#[inline]
pub fn assign_to_key_group<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> KeyGroup {
    key_group_for_hash(key_hash(key), max_parallelism)
}

/// The subtask that owns a key group: `key_group × parallelism / max_parallelism`.
#[inline]
pub fn operator_index_for_key_group(max_parallelism: u32, parallelism: u32, kg: KeyGroup) -> usize {
    ((kg.0 as u64 * parallelism as u64) / max_parallelism.max(1) as u64) as usize
}

/// A contiguous, half-open range of key groups `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    /// First key group in the range.
    pub start: u32,
    /// One past the last key group.
    pub end: u32,
}

impl KeyGroupRange {
    /// Number of key groups.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// True if the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True if `kg` is in the range.
    #[inline]
    pub fn contains(&self, kg: KeyGroup) -> bool {
        kg.0 >= self.start && kg.0 < self.end
    }

    /// Position of `kg` within the range, if it is in it.
    #[inline]
    pub fn offset(&self, kg: KeyGroup) -> Option<usize> {
        self.contains(kg).then(|| (kg.0 - self.start) as usize)
    }

    /// The key groups of the range.
    pub fn iter(&self) -> impl Iterator<Item = KeyGroup> {
        (self.start..self.end).map(KeyGroup)
    }
}

/// The key groups owned by subtask `index` (Flink's
/// `computeKeyGroupRangeForOperatorIndex`), consistent with [`operator_index_for_key_group`].
pub fn key_group_range_for_subtask(
    max_parallelism: u32,
    parallelism: u32,
    index: usize,
) -> KeyGroupRange {
    let (m, p, i) = (
        max_parallelism as u64,
        parallelism.max(1) as u64,
        index as u64,
    );
    let start = (i * m).div_ceil(p);
    let end_inclusive = ((i + 1) * m - 1) / p;
    KeyGroupRange {
        start: start as u32,
        end: (end_inclusive + 1) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_parallelism_matches_flink() {
        assert_eq!(default_max_parallelism(1), 128);
        assert_eq!(default_max_parallelism(85), 128);
        assert_eq!(default_max_parallelism(86), 256);
        assert_eq!(default_max_parallelism(1000), 2048);
        assert_eq!(default_max_parallelism(40_000), 32_768);
    }

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_index_formula() {
        for max_p in [1u32, 7, 128, 129, 1000, 32_768] {
            for p in 1..=max_p.min(17) {
                let mut next = 0;
                for i in 0..p as usize {
                    let r = key_group_range_for_subtask(max_p, p, i);
                    assert_eq!(r.start, next, "max_p={max_p} p={p} i={i}");
                    next = r.end;
                    for kg in r.iter() {
                        assert_eq!(operator_index_for_key_group(max_p, p, kg), i);
                    }
                }
                assert_eq!(next, max_p);
            }
        }
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        // Pinned values: key groups are part of snapshot compatibility.
        assert_eq!(key_hash(&42u64), key_hash(&42u64));
        assert_ne!(key_hash("a"), key_hash("a\0"));
        let pinned = [key_hash(&0u64), key_hash("flink"), key_hash(&(1u32, "x"))];
        assert_eq!(
            pinned,
            [
                1_118_092_768_956_766_106,
                17_124_052_365_941_416_321,
                1_551_845_673_947_680_245
            ],
            "the key hash changed: existing snapshots would map keys to other key groups"
        );
        let mut counts = [0usize; 128];
        for k in 0..128_000u64 {
            counts[assign_to_key_group(&k, 128).0 as usize] += 1;
        }
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(min > 850 && max < 1150, "uneven key groups: {min}..{max}");
    }
}
