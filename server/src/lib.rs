//! `tasklog-server`: the tasklog node (binary `tasklog`).
//!
//! Today it holds the `demo` command, which exercises the engine's segment log on a local data
//! directory. The node itself comes next (DESIGN.md §5): axum routes for the A2A task methods
//! (JSON-RPC and HTTP+JSON), SSE fed from the committed log, the worker API (claim with lease,
//! heartbeat, ack), health and metrics, and a local three-node cluster in one command.

pub mod demo;
pub mod inspect;
