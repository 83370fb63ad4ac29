//! `tasklog-fuzz`: fuzz targets for every byte tasklog reads from disk or the network (not built
//! yet; see DESIGN.md §7 and STYLE.md "tests/, fuzz/, benches/").
//!
//! It will own the target logic as plain functions (frame decode, record checked access, segment
//! recovery from arbitrary bytes, index and checkpoint load, a log model with crashes and reopen),
//! called by thin cargo-fuzz targets on nightly and by a stable `#[test]` that replays `fuzz/seeds/`
//! plus a bounded seeded batch, so CI exercises them without nightly.
