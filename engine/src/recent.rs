//! The store's memory of its most recent records, so that subscriptions and tails that keep up
//! take them from memory instead of reading and decoding the log again.
//!
//! A ring of [`RECENT_BATCHES_MAX`] slots indexed by position: the record at `p` lives in slot
//! `p % RECENT_BATCHES_MAX` until the record at `p + RECENT_BATCHES_MAX` takes the slot, so the
//! memory is bounded and nothing is ever evicted by count. Each slot has its own lock, held for a
//! pointer copy: a writer remembering a record (the embedded store does it under the log's
//! appenders' lock, see `TaskStore::remember`) never waits for a reader walking other slots, and a
//! reader never holds up more than the one slot it is copying.
//!
//! Invariant: a slot names the position it holds, and a lookup only answers for that position,
//! so a slot overwritten meanwhile reads as "not remembered", never as another record.

use std::sync::{Arc, Mutex};

use crate::entry::Position;
use crate::event::EventBatch;
use crate::log::lock;

/// Records kept in memory (a few MiB of batches at most).
pub(crate) const RECENT_BATCHES_MAX: usize = 4096;

/// One slot: the position it holds (0: none; positions start at 1) and the batch, or `None` for
/// a record that is not one to deliver (rejected, or the replication layer's own).
#[derive(Default)]
struct Slot {
    position: u64,
    batch: Option<Arc<EventBatch>>,
}

/// The most recent records, by position.
pub(crate) struct Recent {
    slots: Box<[Mutex<Slot>]>,
}

impl Recent {
    pub(crate) fn new() -> Self {
        Recent {
            slots: (0..RECENT_BATCHES_MAX)
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
        }
    }

    fn slot(&self, position: u64) -> &Mutex<Slot> {
        // The remainder is below the slot count, so the index is in bounds.
        &self.slots[(position % self.slots.len() as u64) as usize]
    }

    /// Keeps the record at `position` (replacing whatever held its slot) and returns the batch
    /// it displaced, for the caller to drop where freeing it holds up no one.
    #[must_use = "dropping the displaced batch frees it"]
    pub(crate) fn insert(
        &self,
        position: u64,
        batch: Option<Arc<EventBatch>>,
    ) -> Option<Arc<EventBatch>> {
        let mut slot = lock(self.slot(position));
        // Never step back: a slot only moves on to later positions.
        if slot.position > position {
            return batch;
        }
        slot.position = position;
        std::mem::replace(&mut slot.batch, batch)
    }

    /// `None` if `position` is not remembered; else its batch, `None` for a record that is no
    /// batch to deliver.
    pub(crate) fn get(&self, position: u64) -> Option<Option<Arc<EventBatch>>> {
        let slot = lock(self.slot(position));
        (slot.position == position && position != 0).then(|| slot.batch.clone())
    }

    /// The remembered records at consecutive positions `from`, `from + 1`, … up to `to`, at most
    /// `max` of them, stopping at the first one not remembered (empty if `from` is not).
    pub(crate) fn run(
        &self,
        from: u64,
        to: u64,
        max: usize,
    ) -> Vec<(Position, Option<Arc<EventBatch>>)> {
        let mut out = Vec::new();
        for position in (from..=to).take(max) {
            match self.get(position) {
                Some(batch) => out.push((Position::new(position), batch)),
                None => break,
            }
        }
        out
    }

    /// Forgets everything (a replica installing a snapshot).
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            *lock(slot) = Slot::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn batch(task: &str) -> Option<Arc<EventBatch>> {
        Some(Arc::new(EventBatch {
            task_id: task.into(),
            first_version: 1,
            timestamp: Timestamp(0),
            events: Vec::new(),
        }))
    }

    #[test]
    fn a_slot_answers_only_for_the_position_it_holds() {
        let recent = Recent::new();
        let max = RECENT_BATCHES_MAX as u64;
        assert!(recent.get(0).is_none(), "position 0 is never remembered");
        assert!(recent.insert(5, batch("a")).is_none());
        assert!(recent.insert(6, None).is_none());
        assert_eq!(recent.get(5).flatten().unwrap().task_id, "a");
        assert!(matches!(recent.get(6), Some(None)));
        assert!(recent.get(5 + max).is_none());
        // A later position takes the slot; an earlier one never takes it back.
        let displaced = recent.insert(5 + max, batch("b"));
        assert_eq!(displaced.unwrap().task_id, "a");
        assert_eq!(recent.insert(5, batch("c")).unwrap().task_id, "c");
        assert!(recent.get(5).is_none());
        assert_eq!(recent.get(5 + max).flatten().unwrap().task_id, "b");
    }

    #[test]
    fn a_run_stops_at_the_first_position_not_remembered() {
        let recent = Recent::new();
        for position in [10, 11, 12, 14] {
            drop(recent.insert(position, batch("t")));
        }
        let positions = |run: Vec<(Position, Option<Arc<EventBatch>>)>| {
            run.iter().map(|(p, _)| p.get()).collect::<Vec<_>>()
        };
        assert_eq!(positions(recent.run(10, 20, 100)), [10, 11, 12]);
        assert_eq!(positions(recent.run(10, 11, 100)), [10, 11]);
        assert_eq!(positions(recent.run(10, 20, 2)), [10, 11]);
        assert!(recent.run(13, 20, 100).is_empty());
        recent.clear();
        assert!(recent.run(10, 20, 100).is_empty());
    }
}
