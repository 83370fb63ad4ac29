//! [`OrderList`]: task slots (indexes into the task table) kept sorted by a rank that the table
//! computes from the slot, in small chunks. The task table keeps one per task state and one per
//! context with several tasks, so that `ListTasks` pages, filtered or not, walk only the tasks
//! they can return.
//!
//! A slot costs 4 bytes here (a `u32`, about 6 with the chunks' slack), against 32 bytes plus the
//! node slack of a `BTreeSet<(Timestamp, CompactId)>` entry: the lists hold every task at least
//! twice, so their size matters for DESIGN.md's E7 (memory per idle task).
//!
//! The list does not know the ranks: every method that compares takes `rank_of` (or a predicate)
//! and the caller guarantees that a slot's rank does not change while the slot is in the list (the
//! table removes a task under its old rank before it changes the task's status time). Chunks are
//! stored oldest (lowest rank) first, so that new tasks, the newest, are appended at the end:
//! no chunk moves and full chunks stay full.
//!
//! Pure logic, no I/O, deterministic.

/// Most slots one chunk holds; a longer one is split in two.
const CHUNK_SLOTS_MAX: usize = 128;
/// A chunk shorter than this after a removal is merged into a neighbour if the two fit in one.
const CHUNK_SLOTS_MERGE: usize = CHUNK_SLOTS_MAX / 4;

const _: () = assert!(CHUNK_SLOTS_MERGE >= 1 && CHUNK_SLOTS_MERGE < CHUNK_SLOTS_MAX);

/// Slots in ascending rank, in chunks of at most [`CHUNK_SLOTS_MAX`]; no chunk is empty.
#[derive(Debug, Default, Clone)]
pub(crate) struct OrderList {
    chunks: Vec<Vec<u32>>,
    len: usize,
}

impl OrderList {
    /// A list of `slots`, which must already be in ascending rank.
    pub(crate) fn from_sorted(slots: impl IntoIterator<Item = u32>) -> Self {
        let mut list = OrderList::default();
        for slot in slots {
            list.push_last(slot);
        }
        list
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends a slot ranked above every slot in the list.
    pub(crate) fn push_last(&mut self, slot: u32) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK_SLOTS_MAX => last.push(slot),
            _ => self.chunks.push(vec![slot]),
        }
        self.len += 1;
    }

    /// `(chunk, index)` of the first slot for which `below` is false; `below` must be true for a
    /// prefix of the list and false after it. `(chunks.len(), 0)` when it holds for every slot.
    fn partition(&self, below: impl Fn(u32) -> bool) -> (usize, usize) {
        let chunk = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|&last| below(last)));
        let index = self
            .chunks
            .get(chunk)
            .map_or(0, |c| c.partition_point(|&slot| below(slot)));
        (chunk, index)
    }

    /// Inserts `slot`, whose rank is `rank`; `rank_of` gives the rank of the slots already in.
    /// Ranks are distinct: a slot already there (same rank) is not inserted twice.
    pub(crate) fn insert<R: Ord>(&mut self, slot: u32, rank: &R, rank_of: impl Fn(u32) -> R) {
        // The common case: a new task, or a task whose status just changed, is the newest.
        let at_end = self
            .chunks
            .last()
            .and_then(|c| c.last())
            .is_none_or(|&last| rank_of(last) < *rank);
        if at_end {
            self.push_last(slot);
            return;
        }
        let (chunk, index) = self.partition(|s| rank_of(s) < *rank);
        let Some(target) = self.chunks.get_mut(chunk) else {
            return;
        };
        if target.get(index).is_some_and(|&s| rank_of(s) == *rank) {
            debug_assert!(false, "slot {slot} inserted twice into an order list");
            return;
        }
        target.insert(index, slot);
        self.len += 1;
        if target.len() > CHUNK_SLOTS_MAX {
            let upper = target.split_off(target.len() / 2);
            self.chunks.insert(chunk + 1, upper);
        }
    }

    /// Removes `slot`, whose rank is `rank`; `false` if it is not in the list.
    pub(crate) fn remove<R: Ord>(
        &mut self,
        slot: u32,
        rank: &R,
        rank_of: impl Fn(u32) -> R,
    ) -> bool {
        let (chunk, index) = self.partition(|s| rank_of(s) < *rank);
        let Some(target) = self.chunks.get_mut(chunk) else {
            return false;
        };
        if target.get(index) != Some(&slot) {
            return false;
        }
        target.remove(index);
        self.len -= 1;
        let left = target.len();
        if left == 0 {
            self.chunks.remove(chunk);
        } else if left < CHUNK_SLOTS_MERGE {
            self.merge_around(chunk);
        }
        true
    }

    /// Merges the short chunk at `chunk` into a neighbour when both fit in one chunk.
    fn merge_around(&mut self, chunk: usize) {
        let len_at = |i: usize| self.chunks.get(i).map(Vec::len);
        let (Some(len), next, previous) = (
            len_at(chunk),
            len_at(chunk + 1),
            chunk.checked_sub(1).and_then(len_at),
        ) else {
            return;
        };
        let (into, from) = if next.is_some_and(|n| n + len <= CHUNK_SLOTS_MAX) {
            (chunk, chunk + 1)
        } else if previous.is_some_and(|p| p + len <= CHUNK_SLOTS_MAX) {
            (chunk - 1, chunk)
        } else {
            return;
        };
        let moved = self.chunks.remove(from);
        if let Some(target) = self.chunks.get_mut(into) {
            target.extend(moved);
        }
    }

    /// Slots for which `below` is true (a prefix, see [`OrderList::partition`]), highest rank
    /// first.
    pub(crate) fn descending_below(
        &self,
        below: impl Fn(u32) -> bool,
    ) -> impl Iterator<Item = u32> + '_ {
        let (chunk, index) = self.partition(below);
        self.descending_from(chunk, index)
    }

    /// Every slot, highest rank first.
    pub(crate) fn descending(&self) -> impl Iterator<Item = u32> + '_ {
        self.descending_from(self.chunks.len(), 0)
    }

    /// The slots before `(chunk, index)`, highest rank first.
    fn descending_from(&self, chunk: usize, index: usize) -> impl Iterator<Item = u32> + '_ {
        let partial = self
            .chunks
            .get(chunk)
            .and_then(|c| c.get(..index))
            .unwrap_or_default();
        let whole = self.chunks.get(..chunk).unwrap_or_default();
        partial
            .iter()
            .rev()
            .chain(whole.iter().rev().flat_map(|c| c.iter().rev()))
            .copied()
    }

    /// Every slot, lowest rank first.
    pub(crate) fn ascending(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// Number of slots for which `below` is false (a suffix, see [`OrderList::partition`]).
    pub(crate) fn count_not_below(&self, below: impl Fn(u32) -> bool) -> usize {
        let (chunk, index) = self.partition(below);
        let before: usize = self
            .chunks
            .get(..chunk)
            .unwrap_or_default()
            .iter()
            .map(Vec::len)
            .sum();
        self.len - before - index
    }

    /// Checks the list's own invariants (chunks non-empty and bounded, `len` right, ascending by
    /// `rank_of`). O(n): for tests.
    #[cfg(test)]
    fn check<R: Ord>(&self, rank_of: impl Fn(u32) -> R) {
        assert!(
            self.chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= CHUNK_SLOTS_MAX)
        );
        assert_eq!(self.len, self.chunks.iter().map(Vec::len).sum::<usize>());
        let ranks: Vec<R> = self.ascending().map(rank_of).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// A slot's rank in these tests: its value scrambled, so that slot order and rank order differ.
    fn rank(slot: u32) -> u64 {
        u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random inserts and removes against a `BTreeSet` of ranks; every query matches the set.
        #[test]
        fn order_list_matches_a_sorted_set(
            ops in prop::collection::vec((any::<bool>(), 0u32..600), 1..1500),
            newest_bias in any::<bool>(),
        ) {
            let mut list = OrderList::default();
            let mut model: BTreeSet<(u64, u32)> = BTreeSet::new();
            let mut next_new = 1_000_000u32;
            for (insert, value) in ops {
                // With the bias, most inserts are newer than everything (the store's common case).
                let slot = if insert && newest_bias && value % 4 != 0 {
                    next_new += 1;
                    next_new
                } else {
                    value
                };
                let slot_rank = if slot >= 1_000_000 { u64::MAX / 2 + u64::from(slot) } else { rank(slot) };
                let rank_of = |s: u32| if s >= 1_000_000 { u64::MAX / 2 + u64::from(s) } else { rank(s) };
                if insert {
                    let fresh = model.insert((slot_rank, slot));
                    if fresh {
                        list.insert(slot, &slot_rank, rank_of);
                    }
                } else {
                    let removed = list.remove(slot, &slot_rank, rank_of);
                    prop_assert_eq!(removed, model.remove(&(slot_rank, slot)));
                }
                list.check(rank_of);
                prop_assert_eq!(list.len(), model.len());
                let bound = rank(value);
                let below: Vec<u32> = list.descending_below(|s| rank_of(s) < bound).collect();
                let expected: Vec<u32> = model.iter().rev().filter(|(r, _)| *r < bound).map(|(_, s)| *s).collect();
                prop_assert_eq!(below, expected);
                prop_assert_eq!(
                    list.count_not_below(|s| rank_of(s) < bound),
                    model.iter().filter(|(r, _)| *r >= bound).count()
                );
            }
            let all: Vec<u32> = list.ascending().collect();
            let expected: Vec<u32> = model.iter().map(|(_, s)| *s).collect();
            prop_assert_eq!(&all, &expected);
            let descending: Vec<u32> = list.descending().collect();
            prop_assert_eq!(descending, expected.into_iter().rev().collect::<Vec<_>>());
        }
    }

    #[test]
    fn sorted_input_fills_whole_chunks() {
        let list = OrderList::from_sorted(0..1000);
        list.check(|s| s);
        assert_eq!(list.chunks.len(), 1000usize.div_ceil(CHUNK_SLOTS_MAX));
        let mut list = OrderList::default();
        for slot in 0..1000 {
            list.insert(slot, &slot, |s| s);
        }
        assert_eq!(list.chunks.len(), 1000usize.div_ceil(CHUNK_SLOTS_MAX));
    }
}
