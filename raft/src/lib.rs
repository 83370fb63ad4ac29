//! `tasklog-raft`: replication of the tasklog engine (not built yet; see DESIGN.md §4).
//!
//! It will own: openraft pinned to an exact version behind a thin adapter; Raft log storage on the
//! engine's segment log (the term is in every frame, so each event is written once); vote and
//! committed position in a small meta file replaced atomically; a state machine that applies
//! commands to the engine's task state, deterministically; snapshots made of sealed segments plus
//! an index checkpoint; and a QUIC network (quinn + rustls, mutual TLS against the cluster CA) with
//! deadlines, size caps and separate streams for heartbeats and bulk data.
