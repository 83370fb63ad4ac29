//! Engine suite: the segment log tested from outside the crate, on real files.
//!
//! - `log_basics`: append, read, roll, truncate, purge, reopen, limits, locking.
//! - `recovery`: torn tails, corruption, recovery modes, index rebuild, checkpoints.
//! - `poison`: a failed write or fsync stops all writes until reopen.
//! - `concurrency`: many appenders, dense positions, no lost or mixed records.
//! - `model`: proptest sequences of operations and crashes against an in-memory model.
//! - `kill`: a child process killed with SIGKILL mid-append, then the log is checked.
//! - `tasks`: the task store: lifecycle, guards, optimistic concurrency, paging, model test.
//! - `subscriptions`: replay then follow, order, tails, bounded memory with idle subscribers.
//! - `replica`: the store driven by a replication layer (apply in order, rejected no-ops, snapshots).

mod common;
mod compaction;
mod concurrency;
mod kill;
mod log_basics;
mod model;
mod poison;
mod recovery;
mod regressions;
mod replica;
mod subscriptions;
mod tasks;
