//! [`SlotIndex`]: the task table's id → slot map. An open-addressing table with linear probing
//! whose 8-byte buckets hold a task's slot together with 32 bits of its id's hash, so that a
//! lookup reads one bucket run (usually one cache line) and then the one slab entry it names:
//! two dependent memory reads for a task among millions, where a general map of slots reads a
//! control byte group, then the bucket, then the entry (DESIGN.md §6, E4: reading a task's
//! latest state ≥ 1 M/s on one thread).
//!
//! The index stores no ids: the caller hashes an id, and confirms a candidate slot by comparing
//! ids in its slab (`eq`). The bucket's hash bits are the low 32 bits of the hash, which also
//! choose the home bucket, so growing the table needs no rehash. Deletion shifts the following
//! run back (no tombstones), so lookups never slow down with churn.
//!
//! Pure logic, no I/O; the hash seed is the caller's, and nothing observable depends on bucket
//! order.

/// A bucket: `hash bits << 32 | slot`, or [`EMPTY`].
type Bucket = u64;

/// A free bucket. A slot is below `u32::MAX` (`limits::TASKS_MAX`), so no entry equals it.
const EMPTY: Bucket = u64::MAX;

/// Smallest table.
const BUCKETS_MIN: usize = 16;

/// The table grows (doubles) beyond this load, in eighths.
const LOAD_MAX_EIGHTHS: usize = 7;

/// The most buckets: home buckets come from 32 hash bits.
const BUCKETS_MAX: usize = 1 << 32;

/// Slots by the 32 low bits of their key's hash.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotIndex {
    /// A power of two long (or empty).
    buckets: Vec<Bucket>,
    len: usize,
}

fn tag(hash: u64) -> u64 {
    hash & u64::from(u32::MAX)
}

fn slot_of(bucket: Bucket) -> u32 {
    (bucket & u64::from(u32::MAX)) as u32
}

impl SlotIndex {
    /// Number of slots held.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    fn home(&self, tag: u64) -> usize {
        (tag as usize) & self.mask()
    }

    /// Room for `additional` more slots without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let wanted = self.len.saturating_add(additional);
        if wanted.saturating_mul(8) > self.buckets.len().saturating_mul(LOAD_MAX_EIGHTHS) {
            let buckets = (wanted.saturating_mul(8) / LOAD_MAX_EIGHTHS + 1)
                .max(BUCKETS_MIN)
                .checked_next_power_of_two()
                .unwrap_or(BUCKETS_MAX)
                .min(BUCKETS_MAX);
            self.resize(buckets);
        }
    }

    fn resize(&mut self, buckets: usize) {
        if buckets <= self.buckets.len() {
            return;
        }
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; buckets]);
        for bucket in old.into_iter().filter(|b| *b != EMPTY) {
            self.place(bucket);
        }
    }

    /// Puts `bucket` in the first free bucket from its home; the table has one.
    fn place(&mut self, bucket: Bucket) {
        let mask = self.mask();
        let mut at = self.home(bucket >> 32);
        for _ in 0..self.buckets.len() {
            match self.buckets.get_mut(at) {
                Some(free) if *free == EMPTY => {
                    *free = bucket;
                    return;
                }
                _ => at = (at + 1) & mask,
            }
        }
        debug_assert!(false, "no free bucket in the slot index");
    }

    /// The slot whose key hashes to `hash` and for which `eq` holds.
    pub(crate) fn find(&self, hash: u64, eq: impl Fn(u32) -> bool) -> Option<u32> {
        self.position(hash, eq)
            .and_then(|at| self.buckets.get(at))
            .map(|bucket| slot_of(*bucket))
    }

    fn position(&self, hash: u64, eq: impl Fn(u32) -> bool) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let (tag, mask) = (tag(hash), self.mask());
        let mut at = self.home(tag);
        for _ in 0..self.buckets.len() {
            let bucket = *self.buckets.get(at)?;
            if bucket == EMPTY {
                return None;
            }
            if bucket >> 32 == tag && eq(slot_of(bucket)) {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Adds `slot` under `hash`; the caller knows no equal key is in.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        self.reserve(1);
        self.place((tag(hash) << 32) | u64::from(slot));
        self.len += 1;
    }

    /// An index of `entries` (`(hash, slot)`, slots distinct), built in home-bucket order so
    /// that a large table is written front to back instead of at random (several times faster
    /// for millions of slots, which do not fit in cache). `None` if two entries with the same
    /// hash bits are `same` (a key given twice).
    pub(crate) fn build(
        entries: impl ExactSizeIterator<Item = (u64, u32)>,
        same: impl Fn(u32, u32) -> bool,
    ) -> Option<Self> {
        let mut index = SlotIndex::default();
        index.reserve(entries.len());
        let mask = index.mask();
        let mut buckets: Vec<Bucket> = entries
            .map(|(hash, slot)| (tag(hash) << 32) | u64::from(slot))
            .collect();
        let home = |bucket: &Bucket| ((bucket >> 32) as usize) & mask;
        buckets.sort_unstable_by_key(home);
        // Equal keys have equal hash bits, so equal homes: they are neighbours now.
        let mut group = 0;
        for (i, bucket) in buckets.iter().enumerate() {
            let earlier = buckets.get(group..i).unwrap_or_default();
            if earlier
                .first()
                .is_some_and(|first| home(first) != home(bucket))
            {
                group = i;
            } else if earlier
                .iter()
                .any(|other| other >> 32 == bucket >> 32 && same(slot_of(*other), slot_of(*bucket)))
            {
                return None;
            }
        }
        index.len = buckets.len();
        for bucket in buckets {
            index.place(bucket);
        }
        Some(index)
    }

    /// Removes `slot`, held under `hash`; `false` if it is not there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let Some(mut hole) = self.position(hash, |s| s == slot) else {
            return false;
        };
        let mask = self.mask();
        // Backward shift: every entry of the run after the hole that may sit at the hole (its
        // home is not between the hole and itself) moves into it, leaving a new hole.
        let mut at = (hole + 1) & mask;
        for _ in 0..self.buckets.len() {
            let Some(&bucket) = self.buckets.get(at) else {
                break;
            };
            if bucket == EMPTY {
                break;
            }
            let home = self.home(bucket >> 32);
            let distance_now = at.wrapping_sub(home) & mask;
            let distance_at_hole = hole.wrapping_sub(home) & mask;
            if distance_at_hole < distance_now {
                if let Some(target) = self.buckets.get_mut(hole) {
                    *target = bucket;
                }
                hole = at;
            }
            at = (at + 1) & mask;
        }
        if let Some(target) = self.buckets.get_mut(hole) {
            *target = EMPTY;
        }
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Inserts and removes of keys with few distinct hashes (long runs, wrap-around at the
        /// table's end) against a `HashMap`.
        #[test]
        fn slot_index_matches_a_map(
            ops in prop::collection::vec((any::<bool>(), 0u32..300), 1..2000),
            hash_bits in 2u32..40,
        ) {
            let hash_of = |key: u32| {
                let spread = u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (spread & ((1u64 << hash_bits) - 1)) | 0xABCD_0000_0000_0000
            };
            let mut index = SlotIndex::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (insert, key) in ops {
                // The slot is the key here; `eq` compares slots, as the table compares ids.
                if insert {
                    if model.insert(key, key).is_none() {
                        index.insert(hash_of(key), key);
                    }
                } else {
                    prop_assert_eq!(index.remove(hash_of(key), key), model.remove(&key).is_some());
                }
                prop_assert_eq!(index.len(), model.len());
                for probe in [key, key.wrapping_add(1), 299 - key % 300] {
                    prop_assert_eq!(
                        index.find(hash_of(probe), |s| s == probe),
                        model.get(&probe).copied()
                    );
                }
            }
            for (key, slot) in &model {
                prop_assert_eq!(index.find(hash_of(*key), |s| s == *key), Some(*slot));
            }
        }
    }

    /// A built index finds what inserts find, and refuses a key given twice.
    #[test]
    fn build_matches_inserts_and_refuses_repeats() {
        let hash_of = |slot: u32| u64::from(slot % 5000).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let built =
            SlotIndex::build((0..20_000u32).map(|s| (hash_of(s), s)), |_, _| false).unwrap();
        assert_eq!(built.len(), 20_000);
        for slot in 0..20_000u32 {
            assert_eq!(built.find(hash_of(slot), |s| s == slot), Some(slot));
        }
        assert!(
            SlotIndex::build((0..100u32).map(|s| (hash_of(s % 50), s)), |a, b| a % 50
                == b % 50)
            .is_none()
        );
        assert!(
            SlotIndex::build((0..100u32).map(|s| (hash_of(s % 50), s)), |a, b| a == b).is_some()
        );
    }

    #[test]
    fn grows_and_keeps_everything() {
        let mut index = SlotIndex::default();
        for slot in 0..100_000u32 {
            index.insert(u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15), slot);
        }
        assert!(index.buckets.len() * LOAD_MAX_EIGHTHS >= index.len() * 8);
        for slot in (0..100_000u32).step_by(7) {
            let hash = u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_eq!(index.find(hash, |s| s == slot), Some(slot));
            assert!(index.remove(hash, slot));
            assert_eq!(index.find(hash, |s| s == slot), None);
        }
    }
}
