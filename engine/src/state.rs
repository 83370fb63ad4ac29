//! Materialized task state: what the engine knows about every task without reading the log
//! (version, state, context, status time, the log positions of its events), the indexes `ListTasks`
//! reads, the rules a write must pass ([`TaskTable::check`]), and how events fold into an A2A
//! [`Task`] ([`fold`]).
//!
//! Pure logic: no I/O, no clock. The same `check` and `apply` run in the embedded store and, in a
//! cluster, at Raft apply on every node, so every node decides alike; the indexes depend only on
//! the tasks (never on hashing or on the order a table was built in), so every node lists alike.
//!
//! Layout (DESIGN.md §6, E7: memory per idle task). Tasks live in a slab indexed by a `u32`
//! slot; the id → slot map (`SlotIndex`) stores only slots and hash bits (the id is in the slab).
//! Every task is in exactly one per-state `OrderList` of slots (4 bytes a task); contexts are
//! interned in a slab too, and a context with several tasks keeps its own order list and
//! per-state counts, while one with a single task (the common case: a new conversation) keeps
//! just that slot.
//!
//! Invariants, kept by `apply`, `restore` and nothing else: a live task's slot is in
//! `by_state[its state]` and in its context (the slot itself for a one-task context, else the
//! context's order list and state count), each ranked by the task's current status time and id;
//! a context entry exists exactly while it has a task.

use std::cmp::Reverse;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::event::{Event, EventBatch};
use crate::id::CompactId;
use crate::limits::{TASKS_MAX, VERSION_MAX};
use crate::model::{Task, TaskState, Timestamp};
use crate::order::OrderList;
use crate::slot_index::SlotIndex;

/// What the engine keeps in memory per task besides its id: 80 bytes and, for a task written
/// once with a UUID context, no heap allocation (DESIGN.md §6, E7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMeta {
    /// Number of events applied (the version of the last one), at most
    /// [`VERSION_MAX`].
    pub version: u64,
    /// Time of the current status (the `ListTasks` order).
    pub status_timestamp: Timestamp,
    /// The task's context. Kept here although the table also interns contexts, so that reading
    /// a task's latest state (DESIGN.md §6, E4) costs no second lookup.
    pub context_id: CompactId,
    /// The task's event batches, oldest first.
    pub batches: Batches,
    /// Ids of its artifacts (an `append` must name one of them); most tasks have none.
    pub artifact_ids: Option<Box<Vec<String>>>,
    /// The table's handle of the task's context entry; set by the table, ignored by
    /// [`TaskTable::restore`].
    pub(crate) context: u32,
    /// Current state.
    pub state: TaskState,
}

const _: () = assert!(size_of::<TaskMeta>() <= 80);

/// A task's batches as `(log position, version of its last event)`, oldest first; one batch (the
/// common case for an idle task) is kept inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batches {
    /// Exactly one batch.
    One([(u64, u64); 1]),
    /// Any number.
    Many(Vec<(u64, u64)>),
}

impl Batches {
    /// The batches as a slice.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        match self {
            Batches::One(one) => one,
            Batches::Many(many) => many,
        }
    }

    fn push(&mut self, batch: (u64, u64)) {
        match self {
            Batches::Many(many) if many.is_empty() => *self = Batches::One([batch]),
            Batches::Many(many) => many.push(batch),
            Batches::One([first]) => *self = Batches::Many(vec![*first, batch]),
        }
    }
}

impl TaskMeta {
    /// Metadata of a task of `context_id` in `state` since `status_timestamp`, at `version`,
    /// with `batches`.
    pub fn new(
        version: u64,
        state: TaskState,
        status_timestamp: Timestamp,
        context_id: CompactId,
        batches: Batches,
        artifact_ids: Option<Box<Vec<String>>>,
    ) -> Self {
        TaskMeta {
            version,
            status_timestamp,
            context_id,
            batches,
            artifact_ids,
            context: 0,
            state,
        }
    }

    /// Whether the task has an artifact with this id.
    pub fn has_artifact(&self, artifact_id: &str) -> bool {
        self.artifact_ids
            .as_ref()
            .is_some_and(|ids| ids.iter().any(|id| id == artifact_id))
    }
}

/// Key of the `ListTasks` order: newest status first, then by id.
pub type OrderKey = (Reverse<Timestamp>, CompactId);

/// Number of task states, [`TaskState::Unspecified`] included (it never reaches the table, but a
/// list for it keeps the indexing total).
const STATE_COUNT: usize = 9;

/// Index of `state` in per-state arrays.
fn state_index(state: TaskState) -> usize {
    match state {
        TaskState::Unspecified => 0,
        TaskState::Submitted => 1,
        TaskState::Working => 2,
        TaskState::Completed => 3,
        TaskState::Failed => 4,
        TaskState::Canceled => 5,
        TaskState::InputRequired => 6,
        TaskState::Rejected => 7,
        TaskState::AuthRequired => 8,
    }
}

const TERMINAL_STATES: [TaskState; 4] = [
    TaskState::Completed,
    TaskState::Failed,
    TaskState::Canceled,
    TaskState::Rejected,
];

/// A task's place in the order lists: ascending rank is the `ListTasks` order read backwards
/// (oldest status first, then the larger id), so the newest task ranks highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    time: Timestamp,
    id: Reverse<&'a CompactId>,
}

impl<'a> Rank<'a> {
    fn of_key(key: &'a OrderKey) -> Self {
        Rank {
            time: key.0.0,
            id: Reverse(&key.1),
        }
    }
}

/// What a slot that holds no task ranks as and is called; reached only through a bug.
static NO_ID: CompactId = CompactId::Uuid([0; 16]);

/// One live task in the slab.
#[derive(Debug)]
struct TaskEntry {
    id: CompactId,
    meta: TaskMeta,
}

const _: () = assert!(size_of::<Option<TaskEntry>>() <= 104);

/// One context with at least one live task.
#[derive(Debug)]
struct ContextEntry {
    id: CompactId,
    tasks: ContextTasks,
}

#[derive(Debug)]
enum ContextTasks {
    /// The context's only task.
    One(u32),
    /// Two to [`FEW_TASKS_MAX`] tasks, ascending rank, then [`NO_SLOT`]: one small allocation
    /// (a short conversation); counts are walked, not kept.
    Few(Box<Few>),
    /// More (a context that reached more than [`FEW_TASKS_MAX`] keeps this until one task is
    /// left).
    Many(Box<ContextMany>),
}

/// Most tasks a context keeps in a [`Few`] array.
const FEW_TASKS_MAX: usize = 8;

/// The tasks of a small context; unused places hold [`NO_SLOT`].
type Few = [u32; FEW_TASKS_MAX];

/// An unused place of a [`Few`] array: no task slot is `u32::MAX` (`limits::TASKS_MAX`).
const NO_SLOT: u32 = u32::MAX;

/// The slots of a [`Few`] array.
fn few_slots(few: &Few) -> &[u32] {
    let len = few
        .iter()
        .position(|slot| *slot == NO_SLOT)
        .unwrap_or(FEW_TASKS_MAX);
    few.get(..len).unwrap_or_default()
}

/// Inserts `slot` at its rank; `false` (nothing changed) when the array is full.
fn few_insert<'a>(few: &mut Few, slot: u32, rank_of: impl Fn(u32) -> Rank<'a>) -> bool {
    let slots = few_slots(few);
    let len = slots.len();
    if len >= FEW_TASKS_MAX {
        return false;
    }
    let rank = rank_of(slot);
    let at = slots.partition_point(|&s| rank_of(s) < rank);
    // `at <= len < FEW_TASKS_MAX`: the shifted range ends at `len + 1 <= FEW_TASKS_MAX`.
    few.copy_within(at..len, at + 1);
    if let Some(place) = few.get_mut(at) {
        *place = slot;
    }
    true
}

/// Removes `slot`; `false` if it is not there.
fn few_remove(few: &mut Few, slot: u32) -> bool {
    let slots = few_slots(few);
    let len = slots.len();
    let Some(at) = slots.iter().position(|s| *s == slot) else {
        return false;
    };
    few.copy_within(at + 1..len, at);
    if let Some(last) = few.get_mut(len - 1) {
        *last = NO_SLOT;
    }
    true
}

#[derive(Debug)]
struct ContextMany {
    order: OrderList,
    /// Tasks per state, indexed by [`state_index`].
    states: [u32; STATE_COUNT],
}

const _: () = assert!(size_of::<Option<ContextEntry>>() <= 40);

fn entry(tasks: &[Option<TaskEntry>], slot: u32) -> Option<&TaskEntry> {
    tasks.get(slot as usize).and_then(Option::as_ref)
}

fn rank(tasks: &[Option<TaskEntry>], slot: u32) -> Rank<'_> {
    entry(tasks, slot).map_or(
        Rank {
            time: Timestamp(i64::MIN),
            id: Reverse(&NO_ID),
        },
        |task| Rank {
            time: task.meta.status_timestamp,
            id: Reverse(&task.id),
        },
    )
}

/// Whether the task at `slot` changed status before `time` (so it is not listed by
/// `status_timestamp_after = time`); true for the prefix of an order list below that time.
fn older_than(tasks: &[Option<TaskEntry>], slot: u32, time: Timestamp) -> bool {
    entry(tasks, slot).is_none_or(|task| task.meta.status_timestamp < time)
}

/// What `ListTasks` filters on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter<'a> {
    /// Only tasks of this context.
    pub context_id: Option<&'a str>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose status time is at or after this.
    pub status_timestamp_after: Option<Timestamp>,
}

/// One page of [`TaskTable::list`].
#[derive(Debug)]
pub struct ListSlice<'a> {
    /// The tasks, in `ListTasks` order.
    pub tasks: Vec<(&'a CompactId, &'a TaskMeta)>,
    /// Number of tasks matching the filter, over all pages.
    pub total: u64,
    /// Whether more tasks match after the last one.
    pub more: bool,
}

/// Every live task, and the `ListTasks` indexes over them.
#[derive(Debug, Default)]
pub struct TaskTable {
    /// The slab: a task's slot is its index; `None` slots are listed in `free_tasks`.
    tasks: Vec<Option<TaskEntry>>,
    free_tasks: Vec<u32>,
    /// Task id → slot, hashed by the id in the slab.
    task_index: SlotIndex,
    contexts: Vec<Option<ContextEntry>>,
    free_contexts: Vec<u32>,
    /// Context id → slot in `contexts`.
    context_index: HashTable<u32>,
    /// Every live task, by state, in rank order.
    by_state: [OrderList; STATE_COUNT],
    /// foldhash: several times faster than SipHash on these short keys, and seeded per process,
    /// so client-chosen ids cannot be precomputed to collide. Only the hash tables depend on it.
    hasher: foldhash::fast::RandomState,
    len: usize,
}

impl TaskTable {
    fn find_task(&self, id: &CompactId) -> Option<u32> {
        let tasks = &self.tasks;
        self.task_index.find(self.hasher.hash_one(id), |slot| {
            entry(tasks, slot).is_some_and(|task| task.id == *id)
        })
    }

    fn find_context(&self, id: &CompactId) -> Option<u32> {
        let contexts = &self.contexts;
        self.context_index
            .find(self.hasher.hash_one(id), |&slot| {
                context_entry(contexts, slot).is_some_and(|context| context.id == *id)
            })
            .copied()
    }

    /// The task's metadata.
    pub fn get(&self, task_id: &str) -> Option<&TaskMeta> {
        let slot = self.find_task(&CompactId::new(task_id))?;
        entry(&self.tasks, slot).map(|task| &task.meta)
    }

    /// Number of live tasks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no task is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rebuilds a table from checkpointed tasks `(id, metadata)`, as opening a store does from
    /// its checkpoint; `None` if a task id is given twice or there are more than [`TASKS_MAX`]
    /// tasks (which a valid checkpoint never holds).
    pub fn restore(tasks: impl ExactSizeIterator<Item = (CompactId, TaskMeta)>) -> Option<Self> {
        TaskTable::try_restore(tasks.len(), tasks.map(Ok::<_, ()>), ()).ok()
    }

    /// Rebuilds a table from `count` checkpointed tasks read one by one (an error item stops
    /// it): the slab and maps sized once, every order list built from one sort (inserting a
    /// million tasks one by one costs several times more; tasks given in rank order, as
    /// [`TaskTable::iter_ranked`] lists them and checkpoints hold them, are found sorted in one
    /// pass).
    ///
    /// # Errors
    /// The first error item; `repeated` for a task id given twice or more than [`TASKS_MAX`]
    /// tasks (which a valid checkpoint never holds).
    pub(crate) fn try_restore<E>(
        count: usize,
        tasks: impl Iterator<Item = std::result::Result<(CompactId, TaskMeta), E>>,
        repeated: E,
    ) -> std::result::Result<Self, E> {
        let mut table = TaskTable::default();
        let count = count.min(TASKS_MAX);
        table.tasks.reserve_exact(count);
        for task in tasks {
            let (id, meta) = task?;
            if table.tasks.len() >= TASKS_MAX {
                return Err(repeated);
            }
            table.tasks.push(Some(TaskEntry { id, meta }));
        }
        table.len = table.tasks.len();
        let TaskTable { tasks, hasher, .. } = &table;
        // Slots fit in a `u32`: at most TASKS_MAX tasks were taken above.
        let hashes = tasks.iter().enumerate().map(|(slot, task)| {
            (
                task.as_ref().map_or(0, |task| hasher.hash_one(&task.id)),
                u32::try_from(slot).unwrap_or(u32::MAX),
            )
        });
        let same = |a: u32, b: u32| {
            entry(tasks, a).map(|task| &task.id) == entry(tasks, b).map(|task| &task.id)
        };
        let Some(task_index) = SlotIndex::build(hashes, same) else {
            return Err(repeated);
        };
        table.task_index = task_index;
        // At most one context a task: sized once (no rehash, which would look every context
        // up again), and given back below when contexts are shared.
        table.contexts.reserve_exact(table.len);
        table.context_index.reserve(table.len, |_| 0);
        let ranked = ranked_slots(&table.tasks);
        for (_, slot) in ranked {
            let TaskTable {
                tasks,
                contexts,
                context_index,
                hasher,
                ..
            } = &mut table;
            let Some(task) = entry(tasks, slot) else {
                continue;
            };
            let context_id = &task.meta.context_id;
            let next = u32::try_from(contexts.len()).unwrap_or(u32::MAX);
            let context = match context_index.entry(
                hasher.hash_one(context_id),
                |&c| context_entry(contexts, c).is_some_and(|found| found.id == *context_id),
                |&c| context_entry(contexts, c).map_or(0, |found| hasher.hash_one(&found.id)),
            ) {
                hashbrown::hash_table::Entry::Vacant(vacant) => {
                    // A context's first task (the common case: one task a context).
                    vacant.insert(next);
                    contexts.push(Some(ContextEntry {
                        id: context_id.clone(),
                        tasks: ContextTasks::One(slot),
                    }));
                    next
                }
                hashbrown::hash_table::Entry::Occupied(_) => {
                    let context_id = context_id.clone();
                    table.add_to_context(&context_id, slot, |list, slot, _, _| list.push_last(slot))
                }
            };
            let state = entry(&table.tasks, slot).map_or(TaskState::Unspecified, |t| t.meta.state);
            if let Some(Some(task)) = table.tasks.get_mut(slot as usize) {
                task.meta.context = context;
            }
            if let Some(list) = table.by_state.get_mut(state_index(state)) {
                list.push_last(slot);
            }
        }
        table.contexts.shrink_to_fit();
        if table.context_index.len() < table.len / 2 {
            let TaskTable {
                contexts,
                context_index,
                hasher,
                ..
            } = &mut table;
            context_index.shrink_to_fit(|&c| {
                context_entry(contexts, c).map_or(0, |found| hasher.hash_one(&found.id))
            });
        }
        Ok(table)
    }

    /// Every live task in rank order (oldest status first, then the larger id): the order a
    /// checkpoint holds them in, so that restoring it sorts nothing.
    pub fn iter_ranked(&self) -> impl Iterator<Item = (&CompactId, &TaskMeta)> {
        let tasks = &self.tasks;
        ranked_slots(tasks)
            .into_iter()
            .filter_map(move |(_, slot)| entry(tasks, slot).map(|task| (&task.id, &task.meta)))
    }

    /// Every live task, for a checkpoint.
    pub fn iter(&self) -> impl Iterator<Item = (&CompactId, &TaskMeta)> {
        self.tasks
            .iter()
            .flatten()
            .map(|task| (&task.id, &task.meta))
    }

    /// The smallest log position any live task still needs (its first record), if any task lives.
    pub fn first_live_position(&self) -> Option<u64> {
        self.tasks
            .iter()
            .flatten()
            .filter_map(|task| {
                task.meta
                    .batches
                    .as_slice()
                    .first()
                    .map(|(position, _)| *position)
            })
            .min()
    }

    /// Terminal tasks, oldest status first (then the larger id), read lazily from the four
    /// terminal states' order lists merged: taking the oldest `n` costs about `n` steps, not a
    /// walk and sort of every terminal task.
    pub fn terminal_oldest(&self) -> impl Iterator<Item = (&CompactId, &TaskMeta)> + '_ {
        let mut heads: Vec<std::iter::Peekable<_>> = TERMINAL_STATES
            .iter()
            .filter_map(|state| self.by_state.get(state_index(*state)))
            .map(|list| list.ascending().peekable())
            .collect();
        std::iter::from_fn(move || {
            let tasks = &self.tasks;
            let next = heads
                .iter_mut()
                .enumerate()
                .filter_map(|(i, head)| head.peek().map(|slot| (rank(tasks, *slot), i)))
                .min()?;
            let slot = heads.get_mut(next.1)?.next()?;
            Some(entry(tasks, slot).map(|task| (&task.id, &task.meta)))
        })
        .flatten()
    }

    /// Number of terminal tasks.
    pub fn terminal_count(&self) -> usize {
        TERMINAL_STATES
            .iter()
            .map(|state| self.count_in_state(*state))
            .sum()
    }

    /// Number of tasks in `state`.
    pub fn count_in_state(&self, state: TaskState) -> usize {
        self.by_state
            .get(state_index(state))
            .map_or(0, OrderList::len)
    }

    /// A page of `ListTasks`: at most `limit` tasks matching `filter`, in `ListTasks` order
    /// (newest status first, then id), strictly after `after`, and how many match in all.
    ///
    /// Only tasks that can match are walked: a context's own list when a context is given, the
    /// state's list when a state is given, otherwise the per-state lists merged. The walk stops
    /// at the first task older than `status_timestamp_after`. The total is a count kept by the
    /// table for every filter without `status_timestamp_after`, a binary search with it (a walk
    /// of the matching tasks when both a context and a state are given).
    pub fn list(
        &self,
        filter: &ListFilter<'_>,
        after: Option<&OrderKey>,
        limit: usize,
    ) -> ListSlice<'_> {
        let tasks = &self.tasks;
        let rank_of = |slot: u32| rank(tasks, slot);
        let cursor = after.map(Rank::of_key);
        let below_cursor = move |slot: u32| cursor.is_none_or(|c| rank_of(slot) < c);
        let context = filter
            .context_id
            .map(|id| self.find_context(&CompactId::new(id)));
        let candidates: Box<dyn Iterator<Item = u32> + '_> = match (context, filter.state) {
            (Some(None), _) => Box::new(std::iter::empty()),
            (Some(Some(context)), _) => match context_entry(&self.contexts, context) {
                None => Box::new(std::iter::empty()),
                Some(ContextEntry {
                    tasks: ContextTasks::One(slot),
                    ..
                }) => Box::new(std::iter::once(*slot).filter(move |s| below_cursor(*s))),
                Some(ContextEntry {
                    tasks: ContextTasks::Few(few),
                    ..
                }) => Box::new(
                    few_slots(few)
                        .iter()
                        .rev()
                        .copied()
                        .filter(move |s| below_cursor(*s)),
                ),
                Some(ContextEntry {
                    tasks: ContextTasks::Many(many),
                    ..
                }) => Box::new(many.order.descending_below(below_cursor)),
            },
            (None, Some(state)) => match self.by_state.get(state_index(state)) {
                Some(list) => Box::new(list.descending_below(below_cursor)),
                None => Box::new(std::iter::empty()),
            },
            (None, None) => Box::new(Merge {
                heads: self
                    .by_state
                    .iter()
                    .map(|list| list.descending_below(below_cursor).peekable())
                    .collect(),
                rank_of,
            }),
        };
        let time_after = filter.status_timestamp_after;
        let state = filter.state;
        let mut matching = candidates
            .take_while(|&slot| time_after.is_none_or(|t| !older_than(tasks, slot, t)))
            .filter_map(|slot| entry(tasks, slot))
            .filter(|task| state.is_none_or(|s| task.meta.state == s))
            .map(|task| (&task.id, &task.meta));
        let page: Vec<(&CompactId, &TaskMeta)> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        ListSlice {
            tasks: page,
            total: self.total(filter, context) as u64,
            more,
        }
    }

    /// Number of tasks matching `filter`; `context` is its context's slot, looked up already.
    fn total(&self, filter: &ListFilter<'_>, context: Option<Option<u32>>) -> usize {
        let tasks = &self.tasks;
        let older = |time: Timestamp| move |slot: u32| older_than(tasks, slot, time);
        let state_list = |state: TaskState| self.by_state.get(state_index(state));
        match (context, filter.state, filter.status_timestamp_after) {
            (None, None, None) => self.len,
            (None, Some(state), None) => state_list(state).map_or(0, OrderList::len),
            (None, None, Some(time)) => self
                .by_state
                .iter()
                .map(|list| list.count_not_below(older(time)))
                .sum(),
            (None, Some(state), Some(time)) => {
                state_list(state).map_or(0, |list| list.count_not_below(older(time)))
            }
            (Some(context), state, time) => {
                let matches = |slot: u32| {
                    entry(tasks, slot).is_some_and(|task| {
                        state.is_none_or(|s| task.meta.state == s)
                            && time.is_none_or(|t| task.meta.status_timestamp >= t)
                    })
                };
                match context.and_then(|c| context_entry(&self.contexts, c)) {
                    None => 0,
                    Some(ContextEntry {
                        tasks: ContextTasks::One(slot),
                        ..
                    }) => usize::from(matches(*slot)),
                    Some(ContextEntry {
                        tasks: ContextTasks::Few(few),
                        ..
                    }) => few_slots(few).iter().filter(|s| matches(**s)).count(),
                    Some(ContextEntry {
                        tasks: ContextTasks::Many(many),
                        ..
                    }) => match (state, time) {
                        (None, None) => many.order.len(),
                        (Some(state), None) => many
                            .states
                            .get(state_index(state))
                            .map_or(0, |count| *count as usize),
                        (None, Some(time)) => many.order.count_not_below(older(time)),
                        (Some(_), Some(time)) => many
                            .order
                            .descending()
                            .take_while(|&slot| !older_than(tasks, slot, time))
                            .filter(|&slot| matches(slot))
                            .count(),
                    },
                }
            }
        }
    }

    /// Finds or creates the context `id` and adds the task at `slot` to it, with `insert` putting
    /// the slot into the context's order list once it has one; returns the context's slot.
    fn add_to_context(
        &mut self,
        id: &CompactId,
        slot: u32,
        insert: impl Fn(&mut OrderList, u32, &[Option<TaskEntry>], Rank<'_>),
    ) -> u32 {
        let state = entry(&self.tasks, slot).map_or(TaskState::Unspecified, |t| t.meta.state);
        if let Some(context) = self.find_context(id) {
            let TaskTable {
                tasks, contexts, ..
            } = self;
            let Some(Some(found)) = contexts.get_mut(context as usize) else {
                return context;
            };
            match &mut found.tasks {
                ContextTasks::One(other) => {
                    let mut few = Box::new([NO_SLOT; FEW_TASKS_MAX]);
                    few_insert(&mut few, *other, |s| rank(tasks, s));
                    few_insert(&mut few, slot, |s| rank(tasks, s));
                    found.tasks = ContextTasks::Few(few);
                }
                ContextTasks::Few(few) => {
                    if !few_insert(few, slot, |s| rank(tasks, s)) {
                        // Full: the context gets an order list and counts.
                        let mut states = [0u32; STATE_COUNT];
                        for &member in few_slots(few).iter().chain([&slot]) {
                            let member_state = entry(tasks, member)
                                .map_or(TaskState::Unspecified, |t| t.meta.state);
                            if let Some(count) = states.get_mut(state_index(member_state)) {
                                *count += 1;
                            }
                        }
                        let mut order = OrderList::from_sorted(few_slots(few).iter().copied());
                        insert(&mut order, slot, tasks, rank(tasks, slot));
                        found.tasks = ContextTasks::Many(Box::new(ContextMany { order, states }));
                    }
                }
                ContextTasks::Many(many) => {
                    insert(&mut many.order, slot, tasks, rank(tasks, slot));
                    if let Some(count) = many.states.get_mut(state_index(state)) {
                        *count += 1;
                    }
                }
            }
            return context;
        }
        let new = ContextEntry {
            id: id.clone(),
            tasks: ContextTasks::One(slot),
        };
        let context = match self.free_contexts.pop() {
            Some(free) => {
                if let Some(vacant) = self.contexts.get_mut(free as usize) {
                    *vacant = Some(new);
                }
                free
            }
            None => {
                // At most one context per task, and tasks are bounded by TASKS_MAX (u32).
                let next = u32::try_from(self.contexts.len()).unwrap_or(u32::MAX);
                self.contexts.push(Some(new));
                next
            }
        };
        let TaskTable {
            contexts,
            context_index,
            hasher,
            ..
        } = self;
        let hash = context_entry(contexts, context).map_or(0, |c| hasher.hash_one(&c.id));
        context_index.insert_unique(hash, context, |&c| {
            context_entry(contexts, c).map_or(0, |entry| hasher.hash_one(&entry.id))
        });
        context
    }

    /// Takes the task at `slot` out of every index, ranked as its metadata says now.
    fn unlink(&mut self, slot: u32, keep_context: bool) {
        let TaskTable {
            tasks,
            contexts,
            by_state,
            ..
        } = self;
        let Some(task) = entry(tasks, slot) else {
            return;
        };
        let (state, context) = (task.meta.state, task.meta.context);
        let rank_of = |s: u32| rank(tasks, s);
        if let Some(list) = by_state.get_mut(state_index(state)) {
            let removed = list.remove(slot, &rank_of(slot), rank_of);
            debug_assert!(removed, "task slot {slot} missing from its state list");
        }
        let mut drop_context = false;
        if let Some(Some(found)) = contexts.get_mut(context as usize) {
            match &mut found.tasks {
                ContextTasks::One(_) => drop_context = !keep_context,
                ContextTasks::Few(few) => {
                    let removed = few_remove(few, slot);
                    debug_assert!(removed, "task slot {slot} missing from its context");
                    if let ([last], false) = (few_slots(few), keep_context) {
                        found.tasks = ContextTasks::One(*last);
                    }
                }
                ContextTasks::Many(many) => {
                    let removed = many.order.remove(slot, &rank_of(slot), rank_of);
                    debug_assert!(removed, "task slot {slot} missing from its context");
                    if let Some(count) = many.states.get_mut(state_index(state)) {
                        *count = count.saturating_sub(1);
                    }
                    let last = many.order.ascending().next();
                    if !keep_context
                        && many.order.len() == 1
                        && let Some(last) = last
                    {
                        found.tasks = ContextTasks::One(last);
                    }
                }
            }
        }
        if drop_context {
            let hash = context_entry(contexts, context).map_or(0, |c| self.hasher.hash_one(&c.id));
            if let Ok(found) = self.context_index.find_entry(hash, |&c| c == context) {
                found.remove();
            }
            if let Some(vacant) = self.contexts.get_mut(context as usize) {
                *vacant = None;
            }
            self.free_contexts.push(context);
        }
    }

    /// Puts the task at `slot` back into its state list and its context's order (after
    /// [`TaskTable::unlink`] with `keep_context`), ranked as its metadata says now.
    fn relink(&mut self, slot: u32) {
        let TaskTable {
            tasks,
            contexts,
            by_state,
            ..
        } = self;
        let Some(task) = entry(tasks, slot) else {
            return;
        };
        let (state, context) = (task.meta.state, task.meta.context);
        let rank_of = |s: u32| rank(tasks, s);
        if let Some(list) = by_state.get_mut(state_index(state)) {
            list.insert(slot, &rank_of(slot), rank_of);
        }
        match contexts.get_mut(context as usize) {
            Some(Some(ContextEntry {
                tasks: ContextTasks::Few(few),
                ..
            })) => {
                // Room: `unlink` took the task out first.
                let inserted = few_insert(few, slot, rank_of);
                debug_assert!(inserted, "no room to put task slot {slot} back");
            }
            Some(Some(ContextEntry {
                tasks: ContextTasks::Many(many),
                ..
            })) => {
                many.order.insert(slot, &rank_of(slot), rank_of);
                if let Some(count) = many.states.get_mut(state_index(state)) {
                    *count += 1;
                }
            }
            _ => {}
        }
    }

    /// Checks a batch against the task's current state; `expected_version` (if any) must be the
    /// task's version (0 for a task that must not exist yet).
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], [`Error::TaskExists`], [`Error::VersionConflict`],
    /// [`Error::TaskTerminal`], [`Error::InvalidEvent`]. Nothing is changed either way.
    pub fn check(&self, batch: &EventBatch, expected_version: Option<u64>) -> Result<()> {
        let task_id = &batch.task_id;
        let invalid = |reason: String| Error::InvalidEvent {
            task_id: task_id.clone(),
            reason,
        };
        let Some(first) = batch.events.first() else {
            return Err(invalid("a write needs at least one event".into()));
        };
        let existing = self.get(task_id);
        let actual = existing.map_or(0, |meta| meta.version);
        match (first, existing) {
            (Event::Created { .. }, Some(_)) => {
                return Err(Error::TaskExists {
                    task_id: task_id.clone(),
                });
            }
            (Event::Created { .. }, None) if self.len >= TASKS_MAX => {
                return Err(Error::TooLarge {
                    what: "task table",
                    len: self.len as u64,
                    max: TASKS_MAX as u64,
                });
            }
            (Event::Created { .. }, None) => {}
            (_, None) => {
                return Err(Error::TaskNotFound {
                    task_id: task_id.clone(),
                });
            }
            (_, Some(_)) => {}
        }
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(Error::VersionConflict {
                task_id: task_id.clone(),
                expected,
                actual,
            });
        }
        if batch.first_version != actual.saturating_add(1) {
            return Err(invalid(format!(
                "batch starts at version {} but the task is at {actual}",
                batch.first_version
            )));
        }
        // So that `last_version()` of a checked batch, and every `version + 1` taken from the
        // table afterwards, cannot overflow (`events` is not empty here).
        if batch.first_version > VERSION_MAX
            || batch.events.len() as u64 - 1 > VERSION_MAX - batch.first_version
        {
            return Err(invalid(format!(
                "the batch would take the task past version {VERSION_MAX}"
            )));
        }
        let mut state = existing.map(|meta| meta.state);
        let mut artifact_ids: Vec<&str> = existing
            .and_then(|meta| meta.artifact_ids.as_ref())
            .map(|ids| ids.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for (i, event) in batch.events.iter().enumerate() {
            if let Some(current) = state
                && current.is_terminal()
                && !matches!(event, Event::Deleted)
            {
                return Err(Error::TaskTerminal {
                    task_id: task_id.clone(),
                    state: current,
                });
            }
            match event {
                Event::Created { status, .. } => {
                    if i != 0 {
                        return Err(invalid(
                            "created must be the first event of a new task".into(),
                        ));
                    }
                    state = Some(checked_state(status.state, &invalid)?);
                }
                Event::Status(status) => state = Some(checked_state(status.state, &invalid)?),
                Event::Artifact {
                    artifact, append, ..
                } => {
                    let known = artifact_ids.contains(&artifact.artifact_id.as_str());
                    if *append && !known {
                        return Err(invalid(format!(
                            "append to unknown artifact {:?}",
                            artifact.artifact_id
                        )));
                    }
                    if !known {
                        artifact_ids.push(&artifact.artifact_id);
                    }
                }
                Event::Message(_) | Event::Metadata(_) => {}
                Event::Deleted => {
                    if i + 1 != batch.events.len() {
                        return Err(invalid("deleted must be the last event".into()));
                    }
                    if !state.is_some_and(TaskState::is_terminal) {
                        return Err(invalid("only a terminal task can be deleted".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a checked batch written at log `position`.
    pub fn apply(&mut self, position: u64, batch: &EventBatch) {
        let task_id = CompactId::new(&batch.task_id);
        let existing = self.find_task(&task_id);
        if matches!(batch.events.last(), Some(Event::Deleted)) {
            if let Some(slot) = existing {
                self.remove(slot);
            }
            return;
        }
        // The batch's effect on the indexed fields, worked out before anything moves.
        let (mut state, mut time) = existing
            .and_then(|slot| entry(&self.tasks, slot))
            .map_or((TaskState::Submitted, batch.timestamp), |task| {
                (task.meta.state, task.meta.status_timestamp)
            });
        let mut context_id = None;
        for event in &batch.events {
            match event {
                Event::Created {
                    context_id: id,
                    status,
                    ..
                } => {
                    context_id = Some(id.as_str());
                    state = status.state;
                    time = status.timestamp.unwrap_or(batch.timestamp);
                }
                Event::Status(status) => {
                    state = status.state;
                    time = status.timestamp.unwrap_or(batch.timestamp);
                }
                Event::Artifact { .. }
                | Event::Message(_)
                | Event::Metadata(_)
                | Event::Deleted => {}
            }
        }
        let slot = match existing {
            Some(slot) => {
                let moved = entry(&self.tasks, slot).is_some_and(|task| {
                    (task.meta.state, task.meta.status_timestamp) != (state, time)
                });
                if moved {
                    // Out of the lists under the old rank, back in under the new one.
                    self.unlink(slot, true);
                }
                if let Some(Some(task)) = self.tasks.get_mut(slot as usize) {
                    task.meta.state = state;
                    task.meta.status_timestamp = time;
                }
                if moved {
                    self.relink(slot);
                }
                slot
            }
            None => {
                let context_id = CompactId::new(context_id.unwrap_or_default());
                let Some(slot) = self.insert(task_id, state, time, context_id.clone()) else {
                    return;
                };
                let context =
                    self.add_to_context(&context_id, slot, |list, slot, tasks, rank_of_slot| {
                        list.insert(slot, &rank_of_slot, |s| rank(tasks, s))
                    });
                if let Some(Some(task)) = self.tasks.get_mut(slot as usize) {
                    task.meta.context = context;
                }
                let TaskTable {
                    tasks, by_state, ..
                } = self;
                if let Some(list) = by_state.get_mut(state_index(state)) {
                    list.insert(slot, &rank(tasks, slot), |s| rank(tasks, s));
                }
                slot
            }
        };
        let Some(Some(task)) = self.tasks.get_mut(slot as usize) else {
            return;
        };
        let meta = &mut task.meta;
        for event in &batch.events {
            if let Event::Artifact { artifact, .. } = event
                && !meta.has_artifact(&artifact.artifact_id)
            {
                meta.artifact_ids
                    .get_or_insert_with(Box::default)
                    .push(artifact.artifact_id.clone());
            }
        }
        meta.version = batch.last_version();
        meta.batches.push((position, meta.version));
    }

    /// A new slab entry for `id` (in no list yet); `None` when the table is full, which
    /// [`TaskTable::check`] refuses before.
    fn insert(
        &mut self,
        id: CompactId,
        state: TaskState,
        time: Timestamp,
        context_id: CompactId,
    ) -> Option<u32> {
        let hash = self.hasher.hash_one(&id);
        let task = TaskEntry {
            id,
            meta: TaskMeta::new(0, state, time, context_id, Batches::Many(Vec::new()), None),
        };
        let slot = match self.free_tasks.pop() {
            Some(free) => {
                if let Some(vacant) = self.tasks.get_mut(free as usize) {
                    *vacant = Some(task);
                }
                free
            }
            None => {
                let next = u32::try_from(self.tasks.len()).ok()?;
                if self.tasks.len() >= TASKS_MAX {
                    return None;
                }
                self.tasks.push(Some(task));
                next
            }
        };
        self.task_index.insert(hash, slot);
        self.len += 1;
        Some(slot)
    }

    /// Deletes the task at `slot` from the table and every index.
    fn remove(&mut self, slot: u32) {
        self.unlink(slot, false);
        let hash = entry(&self.tasks, slot).map_or(0, |task| self.hasher.hash_one(&task.id));
        let removed = self.task_index.remove(hash, slot);
        debug_assert!(removed, "task slot {slot} missing from the id index");
        if let Some(vacant) = self.tasks.get_mut(slot as usize) {
            *vacant = None;
        }
        self.free_tasks.push(slot);
        self.len = self.len.saturating_sub(1);
    }

    /// Checks every index against the slab (O(n)): each live task is in exactly its state list
    /// and its context, at its rank; counts match. For tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn check_indexes(&self) -> std::result::Result<(), String> {
        let tasks = &self.tasks;
        let rank_of = |s: u32| rank(tasks, s);
        let ascending = |list: &OrderList| -> std::result::Result<Vec<u32>, String> {
            let slots: Vec<u32> = list.ascending().collect();
            if slots.len() != list.len() || slots.windows(2).any(|w| rank_of(w[0]) >= rank_of(w[1]))
            {
                return Err("an order list is out of order or miscounted".into());
            }
            Ok(slots)
        };
        let mut seen = 0usize;
        for (i, list) in self.by_state.iter().enumerate() {
            for slot in ascending(list)? {
                let task = entry(tasks, slot).ok_or("a state list names a free slot")?;
                if state_index(task.meta.state) != i {
                    return Err(format!("task {} is in the wrong state list", task.id));
                }
                seen += 1;
            }
        }
        let live = tasks.iter().flatten().count();
        if seen != live || live != self.len || self.task_index.len() != live {
            return Err(format!(
                "{live} live tasks, {seen} in state lists, len {}, {} in the id map",
                self.len,
                self.task_index.len()
            ));
        }
        let mut in_contexts = 0usize;
        for (slot, context) in (0u32..).zip(&self.contexts) {
            let Some(context) = context else { continue };
            if self.find_context(&context.id) != Some(slot) {
                return Err(format!("context {} is not found by its id", context.id));
            }
            let members = match &context.tasks {
                ContextTasks::One(task) => vec![*task],
                ContextTasks::Few(few) => {
                    let members = few_slots(few).to_vec();
                    let sorted = members.windows(2).all(|w| rank_of(w[0]) < rank_of(w[1]));
                    let unused = few.get(members.len()..).unwrap_or_default();
                    if members.len() < 2 || !sorted || unused.iter().any(|s| *s != NO_SLOT) {
                        return Err(format!("context {} has a bad small list", context.id));
                    }
                    members
                }
                ContextTasks::Many(many) => {
                    let members = ascending(&many.order)?;
                    let mut states = [0u32; STATE_COUNT];
                    for task in &members {
                        let state = entry(tasks, *task).map_or(0, |t| state_index(t.meta.state));
                        if let Some(count) = states.get_mut(state) {
                            *count += 1;
                        }
                    }
                    if members.len() < 2 || states != many.states {
                        return Err(format!("context {} has wrong counts", context.id));
                    }
                    members
                }
            };
            for task in members {
                let meta = entry(tasks, task)
                    .map(|t| &t.meta)
                    .ok_or("a context names a free slot")?;
                if meta.context != slot || meta.context_id != context.id {
                    return Err(format!("context {} lists a task of another", context.id));
                }
                in_contexts += 1;
            }
        }
        if in_contexts != live || self.context_index.len() != self.contexts.iter().flatten().count()
        {
            return Err(format!("{in_contexts} of {live} tasks are in a context"));
        }
        for (id, meta) in tasks.iter().flatten().map(|t| (&t.id, &t.meta)) {
            if self.get(&id.to_string()) != Some(meta) {
                return Err(format!("task {id} is not found by its id"));
            }
        }
        Ok(())
    }
}

/// Every live slot with its status time, in ascending rank: sorted by status time (inline),
/// then by id only on a tie (a slab lookup). Already sorted input (a checkpoint written in rank
/// order) is recognized in one pass by the sort.
fn ranked_slots(tasks: &[Option<TaskEntry>]) -> Vec<(Timestamp, u32)> {
    let mut ranked: Vec<(Timestamp, u32)> = (0u32..)
        .zip(tasks)
        .filter_map(|(slot, task)| task.as_ref().map(|t| (t.meta.status_timestamp, slot)))
        .collect();
    ranked.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| rank(tasks, a.1).cmp(&rank(tasks, b.1)))
    });
    ranked
}

fn context_entry(contexts: &[Option<ContextEntry>], slot: u32) -> Option<&ContextEntry> {
    contexts.get(slot as usize).and_then(Option::as_ref)
}

/// The per-state lists read together, highest rank first (the `ListTasks` order).
struct Merge<I: Iterator<Item = u32>, F> {
    heads: Vec<std::iter::Peekable<I>>,
    rank_of: F,
}

impl<'a, I: Iterator<Item = u32>, F: Fn(u32) -> Rank<'a>> Iterator for Merge<I, F> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let mut best: Option<(usize, Rank<'a>)> = None;
        for (i, head) in self.heads.iter_mut().enumerate() {
            if let Some(&slot) = head.peek() {
                let rank = (self.rank_of)(slot);
                if best.is_none_or(|(_, b)| rank > b) {
                    best = Some((i, rank));
                }
            }
        }
        let (i, _) = best?;
        self.heads.get_mut(i)?.next()
    }
}

fn checked_state(state: TaskState, invalid: &impl Fn(String) -> Error) -> Result<TaskState> {
    if state == TaskState::Unspecified {
        return Err(invalid(
            "TASK_STATE_UNSPECIFIED is not a state a task can be in".into(),
        ));
    }
    Ok(state)
}

/// Checks a batch read at a log position the table lists for `task_id`: it must be that task's
/// and hold `version`. The table (restored from a checkpoint or a snapshot) only points at
/// records, so a table that does not match the log would otherwise make `get` fold another
/// task's events and a subscription deliver the same batch forever.
///
/// # Errors
/// [`Error::InvalidPayload`] naming `position`.
pub fn check_listed_batch(
    batch: &EventBatch,
    position: u64,
    task_id: &str,
    version: u64,
) -> Result<()> {
    if batch.task_id != task_id
        || batch.events.is_empty()
        || !(batch.first_version..=batch.last_version()).contains(&version)
    {
        return Err(Error::InvalidPayload {
            position,
            reason: format!(
                "the task table lists this record for version {version} of task {task_id:?}, \
                 but it holds versions {}..={} of task {:?}",
                batch.first_version,
                batch.last_version(),
                batch.task_id
            ),
        });
    }
    Ok(())
}

/// Folds one batch into the task (A2A.md, "How events fold into a task"): created makes it;
/// a status replaces the status and moves the previous status message into the history; an
/// artifact is added, replaced by id, or extended; a message joins the history; metadata is
/// replaced; deleted removes it.
pub fn fold(task: &mut Option<Task>, batch: &EventBatch) {
    for event in &batch.events {
        match (event, task.as_mut()) {
            (
                Event::Created {
                    context_id,
                    status,
                    message,
                    metadata,
                },
                _,
            ) => {
                let mut status = status.clone();
                status.timestamp.get_or_insert(batch.timestamp);
                *task = Some(Task {
                    id: batch.task_id.clone(),
                    context_id: context_id.clone(),
                    status,
                    artifacts: Vec::new(),
                    history: message.iter().cloned().collect(),
                    metadata: metadata.clone(),
                });
            }
            (Event::Status(status), Some(task)) => {
                let mut status = status.clone();
                status.timestamp.get_or_insert(batch.timestamp);
                if let Some(previous) = std::mem::replace(&mut task.status, status).message {
                    task.history.push(previous);
                }
            }
            (
                Event::Artifact {
                    artifact, append, ..
                },
                Some(task),
            ) => {
                match task
                    .artifacts
                    .iter_mut()
                    .find(|a| a.artifact_id == artifact.artifact_id)
                {
                    Some(existing) if *append => {
                        existing.parts.extend(artifact.parts.iter().cloned())
                    }
                    Some(existing) => *existing = artifact.clone(),
                    None => task.artifacts.push(artifact.clone()),
                }
            }
            (Event::Message(message), Some(task)) => task.history.push(message.clone()),
            (Event::Metadata(metadata), Some(task)) => task.metadata = Some(metadata.clone()),
            (Event::Deleted, _) => *task = None,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Artifact, Message, Part, Role, TaskStatus};

    fn batch(task_id: &str, first_version: u64, events: Vec<Event>) -> EventBatch {
        EventBatch {
            task_id: task_id.into(),
            first_version,
            timestamp: Timestamp(1000 + first_version as i64),
            events,
        }
    }

    fn created() -> Event {
        Event::Created {
            context_id: "c".into(),
            status: TaskStatus::new(TaskState::Submitted),
            message: None,
            metadata: None,
        }
    }

    fn message(id: &str) -> Message {
        Message {
            message_id: id.into(),
            context_id: None,
            task_id: None,
            role: Role::Agent,
            parts: vec![Part::text(id)],
            metadata: None,
            extensions: vec![],
            reference_task_ids: vec![],
        }
    }

    fn artifact(id: &str, text: &str) -> Artifact {
        Artifact {
            artifact_id: id.into(),
            name: None,
            description: None,
            parts: vec![Part::text(text)],
            metadata: None,
            extensions: vec![],
        }
    }

    #[test]
    fn guards_reject_and_change_nothing() {
        let mut table = TaskTable::default();
        let create = batch("t", 1, vec![created()]);
        table.check(&create, Some(0)).unwrap();
        table.apply(10, &create);
        assert!(matches!(
            table.check(&create, None),
            Err(Error::TaskExists { .. })
        ));
        assert!(matches!(
            table.check(&batch("u", 1, vec![Event::Message(message("m"))]), None),
            Err(Error::TaskNotFound { .. })
        ));
        let work = batch(
            "t",
            2,
            vec![Event::Status(TaskStatus::new(TaskState::Working))],
        );
        assert!(matches!(
            table.check(&work, Some(3)),
            Err(Error::VersionConflict {
                expected: 3,
                actual: 1,
                ..
            })
        ));
        let unspecified = batch(
            "t",
            2,
            vec![Event::Status(TaskStatus::new(TaskState::Unspecified))],
        );
        assert!(matches!(
            table.check(&unspecified, None),
            Err(Error::InvalidEvent { .. })
        ));
        let append_unknown = batch(
            "t",
            2,
            vec![Event::Artifact {
                artifact: artifact("a", "x"),
                append: true,
                last_chunk: false,
            }],
        );
        assert!(matches!(
            table.check(&append_unknown, None),
            Err(Error::InvalidEvent { .. })
        ));
        // Terminal in the middle of a batch: nothing may follow it, in the same batch or later.
        let done_then_more = batch(
            "t",
            2,
            vec![
                Event::Status(TaskStatus::new(TaskState::Completed)),
                Event::Message(message("late")),
            ],
        );
        assert!(matches!(
            table.check(&done_then_more, None),
            Err(Error::TaskTerminal {
                state: TaskState::Completed,
                ..
            })
        ));
        assert_eq!(table.get("t").unwrap().version, 1);
        assert!(
            matches!(
                table.check(&batch("t", 2, vec![Event::Deleted]), None),
                Err(Error::InvalidEvent { .. })
            ),
            "only terminal tasks are deleted"
        );
        let done = batch(
            "t",
            2,
            vec![Event::Status(TaskStatus::new(TaskState::Failed))],
        );
        table.check(&done, Some(1)).unwrap();
        table.apply(11, &done);
        assert!(matches!(
            table.check(
                &batch(
                    "t",
                    3,
                    vec![Event::Status(TaskStatus::new(TaskState::Working))]
                ),
                None
            ),
            Err(Error::TaskTerminal { .. })
        ));
        // Only deletion follows a terminal state.
        let delete = batch("t", 3, vec![Event::Deleted]);
        table.check(&delete, None).unwrap();
        table.apply(12, &delete);
        assert!(table.get("t").is_none() && table.is_empty());
    }

    /// Found while fuzzing `checkpoint_file`: a task version near `u64::MAX` (from a crafted
    /// checkpoint) overflowed in `check` and `last_version`.
    #[test]
    fn versions_stop_at_the_maximum_without_overflow() {
        let meta = |version| {
            (
                CompactId::new("t"),
                TaskMeta::new(
                    version,
                    TaskState::Working,
                    Timestamp(1),
                    CompactId::new("c"),
                    Batches::One([(1, version)]),
                    None,
                ),
            )
        };
        let message_at = |first_version, count| {
            batch(
                "t",
                first_version,
                (0..count)
                    .map(|i| Event::Message(message(&i.to_string())))
                    .collect(),
            )
        };
        let mut table = TaskTable::restore([meta(VERSION_MAX - 1)].into_iter()).unwrap();
        assert!(matches!(
            table.check(&message_at(VERSION_MAX, 2), None),
            Err(Error::InvalidEvent { .. })
        ));
        table.check(&message_at(VERSION_MAX, 1), None).unwrap();
        table.apply(2, &message_at(VERSION_MAX, 1));
        assert_eq!(table.get("t").unwrap().version, VERSION_MAX);
        assert!(matches!(
            table.check(&message_at(VERSION_MAX + 1, 1), None),
            Err(Error::InvalidEvent { .. })
        ));
        // A table can only get here through a bug, but `check` still refuses instead of panicking.
        let table = TaskTable::restore([meta(u64::MAX)].into_iter()).unwrap();
        for first_version in [0, u64::MAX] {
            assert!(matches!(
                table.check(&message_at(first_version, 2), None),
                Err(Error::InvalidEvent { .. })
            ));
        }
        assert_eq!(message_at(u64::MAX, 2).last_version(), u64::MAX);
        assert_eq!(message_at(0, 0).last_version(), 0);
    }

    #[test]
    fn fold_follows_the_sdk_rules() {
        let mut task = None;
        let first = Event::Created {
            context_id: "c".into(),
            status: TaskStatus::new(TaskState::Submitted),
            message: Some(message("hello")),
            metadata: None,
        };
        fold(&mut task, &batch("t", 1, vec![first]));
        let mut asking = TaskStatus::new(TaskState::InputRequired);
        asking.message = Some(message("which one?"));
        fold(
            &mut task,
            &batch(
                "t",
                2,
                vec![
                    Event::Status(asking),
                    Event::Artifact {
                        artifact: artifact("a", "one"),
                        append: false,
                        last_chunk: false,
                    },
                    Event::Artifact {
                        artifact: artifact("a", "two"),
                        append: true,
                        last_chunk: true,
                    },
                    Event::Artifact {
                        artifact: artifact("b", "x"),
                        append: false,
                        last_chunk: true,
                    },
                    Event::Artifact {
                        artifact: artifact("b", "y"),
                        append: false,
                        last_chunk: true,
                    },
                    Event::Status(TaskStatus::new(TaskState::Completed)),
                ],
            ),
        );
        let task = task.unwrap();
        assert_eq!(task.status.state, TaskState::Completed);
        assert_eq!(
            task.status.timestamp,
            Some(Timestamp(1002)),
            "missing timestamps come from the batch"
        );
        let history: Vec<&str> = task.history.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(
            history,
            ["hello", "which one?"],
            "the previous status message moves into the history"
        );
        assert_eq!(task.artifacts.len(), 2);
        assert_eq!(
            task.artifacts[0].parts,
            vec![Part::text("one"), Part::text("two")],
            "append extends"
        );
        assert_eq!(
            task.artifacts[1].parts,
            vec![Part::text("y")],
            "same id without append replaces"
        );
    }

    /// One step of the index model test.
    #[derive(Debug, Clone)]
    enum IndexOp {
        /// Create a task in context `context % 4` (UUID-shaped or not), at `time`.
        Create { context: u8, uuid: bool, time: u8 },
        /// Move task `task` to `state` at `time` (rejected writes are skipped, as the store does).
        Status { task: u8, state: u8, time: u8 },
        /// Delete task `task` (only a terminal one can be).
        Delete { task: u8 },
        /// Rebuild the table from its own checkpoint image.
        Restore,
    }

    fn index_op() -> impl proptest::strategy::Strategy<Value = IndexOp> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (any::<u8>(), any::<bool>(), 0u8..8).prop_map(|(context, uuid, time)| IndexOp::Create { context, uuid, time }),
            5 => (any::<u8>(), 1u8..9, 0u8..8).prop_map(|(task, state, time)| IndexOp::Status { task, state, time }),
            1 => any::<u8>().prop_map(|task| IndexOp::Delete { task }),
            1 => Just(IndexOp::Restore),
        ]
    }

    const MODEL_STATES: [TaskState; 9] = [
        TaskState::Unspecified,
        TaskState::Submitted,
        TaskState::Working,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::InputRequired,
        TaskState::Rejected,
        TaskState::AuthRequired,
    ];

    /// The plain model: every live task as `(id, context, state, status time)`.
    type Model = Vec<(String, String, TaskState, Timestamp)>;

    /// `list` as a filter and a sort over the model.
    fn model_list(
        model: &Model,
        filter: &ListFilter<'_>,
        after: Option<&OrderKey>,
        limit: usize,
    ) -> (Vec<String>, u64, bool) {
        let mut matching: Vec<OrderKey> = model
            .iter()
            .filter(|(_, context, state, time)| {
                filter.context_id.is_none_or(|c| c == context)
                    && filter.state.is_none_or(|s| s == *state)
                    && filter.status_timestamp_after.is_none_or(|t| *time >= t)
            })
            .map(|(id, _, _, time)| (Reverse(*time), CompactId::new(id)))
            .collect();
        matching.sort();
        let total = matching.len() as u64;
        let rest: Vec<&OrderKey> = matching
            .iter()
            .filter(|key| after.is_none_or(|a| *key > a))
            .collect();
        let page = rest
            .iter()
            .take(limit)
            .map(|key| key.1.to_string())
            .collect();
        (page, total, rest.len() > limit)
    }

    fn restored(table: &TaskTable) -> TaskTable {
        let image: Vec<(CompactId, TaskMeta)> = table
            .iter()
            .map(|(id, meta)| (id.clone(), meta.clone()))
            .collect();
        TaskTable::restore(image.into_iter()).unwrap()
    }

    fn run_index_model(ops: Vec<IndexOp>) {
        let mut table = TaskTable::default();
        let mut model: Model = Vec::new();
        let mut position = 0u64;
        let mut created = 0u32;
        for op in ops {
            position += 1;
            match op {
                IndexOp::Create {
                    context,
                    uuid,
                    time,
                } => {
                    created += 1;
                    let id = if uuid {
                        format!("00000000-0000-4000-8000-{:012x}", created * 7919 % 1000)
                    } else {
                        format!("t{}", created * 7919 % 1000)
                    };
                    let context = if context % 2 == 0 {
                        format!("00000000-0000-4000-8000-{:012x}", context % 4)
                    } else {
                        format!("c{}", context % 4)
                    };
                    let mut status = TaskStatus::new(TaskState::Submitted);
                    status.timestamp = Some(Timestamp(i64::from(time)));
                    let create = batch(
                        &id,
                        1,
                        vec![Event::Created {
                            context_id: context.clone(),
                            status,
                            message: None,
                            metadata: None,
                        }],
                    );
                    if table.check(&create, Some(0)).is_ok() {
                        table.apply(position, &create);
                        model.push((
                            id,
                            context,
                            TaskState::Submitted,
                            Timestamp(i64::from(time)),
                        ));
                    }
                }
                IndexOp::Status { task, state, time } => {
                    let Some(i) = (!model.is_empty()).then(|| task as usize % model.len()) else {
                        continue;
                    };
                    let id = model[i].0.clone();
                    let version = table.get(&id).unwrap().version;
                    let mut status = TaskStatus::new(MODEL_STATES[state as usize]);
                    status.timestamp = Some(Timestamp(i64::from(time)));
                    let update = batch(&id, version + 1, vec![Event::Status(status)]);
                    if table.check(&update, Some(version)).is_ok() {
                        table.apply(position, &update);
                        model[i].2 = MODEL_STATES[state as usize];
                        model[i].3 = Timestamp(i64::from(time));
                    }
                }
                IndexOp::Delete { task } => {
                    let Some(i) = (!model.is_empty()).then(|| task as usize % model.len()) else {
                        continue;
                    };
                    let id = model[i].0.clone();
                    let version = table.get(&id).unwrap().version;
                    let delete = batch(&id, version + 1, vec![Event::Deleted]);
                    if table.check(&delete, None).is_ok() {
                        table.apply(position, &delete);
                        model.remove(i);
                    }
                }
                IndexOp::Restore => table = restored(&table),
            }
            table.check_indexes().unwrap();
            assert_eq!(table.len(), model.len());
            check_lists(&table, &model);
        }
    }

    /// Every filter (each context, each state, times, their combinations) paged with small
    /// pages: the pages and totals match the model's, and paging visits each match once.
    fn check_lists(table: &TaskTable, model: &Model) {
        let mut contexts = vec![
            None,
            Some("00000000-0000-4000-8000-000000000000"),
            Some("c1"),
            Some("00000000-0000-4000-8000-000000000002"),
            Some("c3"),
            Some("absent"),
        ];
        for (_, context, ..) in model {
            if !contexts.contains(&Some(context.as_str())) {
                contexts.push(Some(context.as_str()));
            }
        }
        let states = [
            None,
            Some(TaskState::Submitted),
            Some(TaskState::Working),
            Some(TaskState::Completed),
        ];
        for context_id in contexts {
            for state in states {
                for status_timestamp_after in [None, Some(Timestamp(3))] {
                    let filter = ListFilter {
                        context_id,
                        state,
                        status_timestamp_after,
                    };
                    let mut after: Option<OrderKey> = None;
                    for _ in 0..=model.len() {
                        let slice = table.list(&filter, after.as_ref(), 3);
                        let got: Vec<String> =
                            slice.tasks.iter().map(|(id, _)| id.to_string()).collect();
                        let expected = model_list(model, &filter, after.as_ref(), 3);
                        assert_eq!(
                            (got, slice.total, slice.more),
                            expected,
                            "{filter:?} after {after:?}"
                        );
                        let Some((id, meta)) = slice.tasks.last().filter(|_| slice.more) else {
                            break;
                        };
                        after = Some((Reverse(meta.status_timestamp), (*id).clone()));
                    }
                }
            }
        }
        for state in MODEL_STATES {
            assert_eq!(
                table.count_in_state(state),
                model.iter().filter(|t| t.2 == state).count()
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("TASKLOG_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The indexes (per state, per context, counts) against a plain list of tasks, through
        /// creates, status changes (same or new time), deletes and restores.
        #[test]
        fn list_and_totals_match_a_plain_model(ops in proptest::collection::vec(index_op(), 1..120)) {
            run_index_model(ops);
        }
    }

    /// Many tasks in one context and one state: the lists span several chunks, and a cursor in
    /// the middle of a run of equal status times continues by id.
    #[test]
    fn big_lists_page_by_time_then_id() {
        let mut table = TaskTable::default();
        let mut model: Model = Vec::new();
        for i in 0..1000u32 {
            let id = format!("t{:04}", (i * 7919) % 1000);
            let time = Timestamp(i64::from(i / 10));
            let mut status = TaskStatus::new(TaskState::Submitted);
            status.timestamp = Some(time);
            let create = batch(
                &id,
                1,
                vec![Event::Created {
                    context_id: "c".into(),
                    status,
                    message: None,
                    metadata: None,
                }],
            );
            table.check(&create, Some(0)).unwrap();
            table.apply(u64::from(i) + 1, &create);
            model.push((id, "c".into(), TaskState::Submitted, time));
        }
        for table in [&table, &restored(&table)] {
            table.check_indexes().unwrap();
            for context_id in [None, Some("c")] {
                let filter = ListFilter {
                    context_id,
                    ..ListFilter::default()
                };
                let mut after: Option<OrderKey> = None;
                let mut seen = 0;
                loop {
                    let slice = table.list(&filter, after.as_ref(), 7);
                    let got: Vec<String> =
                        slice.tasks.iter().map(|(id, _)| id.to_string()).collect();
                    assert_eq!(
                        (got, slice.total, slice.more),
                        model_list(&model, &filter, after.as_ref(), 7)
                    );
                    seen += slice.tasks.len();
                    let Some((id, meta)) = slice.tasks.last().filter(|_| slice.more) else {
                        break;
                    };
                    after = Some((Reverse(meta.status_timestamp), (*id).clone()));
                }
                assert_eq!(seen, 1000);
            }
        }
    }

    /// A context grows from one task to a small array to an order list with counts, and back to
    /// one task and to nothing as its tasks are deleted; every step lists as the model says.
    #[test]
    fn a_context_grows_and_shrinks_through_every_form() {
        let mut table = TaskTable::default();
        let mut model: Model = Vec::new();
        let mut position = 0;
        let ids: Vec<String> = (0..(FEW_TASKS_MAX as u32 + 3))
            .map(|i| format!("t{i}"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let mut status = TaskStatus::new(TaskState::Working);
            status.timestamp = Some(Timestamp(i as i64 % 3));
            let create = batch(
                id,
                1,
                vec![Event::Created {
                    context_id: "c".into(),
                    status,
                    message: None,
                    metadata: None,
                }],
            );
            table.check(&create, Some(0)).unwrap();
            position += 1;
            table.apply(position, &create);
            model.push((
                id.clone(),
                "c".into(),
                TaskState::Working,
                Timestamp(i as i64 % 3),
            ));
            table.check_indexes().unwrap();
            check_lists(&table, &model);
        }
        for id in &ids {
            for (version, event) in [
                (2, Event::Status(TaskStatus::new(TaskState::Completed))),
                (3, Event::Deleted),
            ] {
                let write = batch(id, version, vec![event]);
                table.check(&write, Some(version - 1)).unwrap();
                position += 1;
                table.apply(position, &write);
                let at = model.iter().position(|t| t.0 == *id).unwrap();
                if version == 2 {
                    model[at].2 = TaskState::Completed;
                    model[at].3 = write.timestamp;
                } else {
                    model.remove(at);
                }
                table.check_indexes().unwrap();
                check_lists(&table, &model);
            }
        }
        assert!(table.is_empty() && table.contexts.iter().all(Option::is_none));
        assert_eq!(table.context_index.len(), 0);
    }
}
