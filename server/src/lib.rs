//! `tasklog-server`: the tasklog node (binary `tasklog`).
//!
//! - [`serve`]: one node: QUIC + mutual TLS to its peers (Raft), HTTP for clients ([`http`]),
//!   configured by flags or a TOML file ([`config`]), stopped in order on SIGINT / SIGTERM.
//! - [`cluster`]: a local three-node cluster in one command, with a demo load and a live table of
//!   what every node has committed and applied; [`client`] is the HTTP client it uses.
//! - [`admin`]: `tasklog status` and `tasklog member …` over the nodes' HTTP API.
//! - [`load`]: a load generator against running nodes (`tasklog load`).
//! - [`local`]: node processes on this machine, for the process tests and the cluster bench.
//! - [`demo`], [`inspect`]: the engine alone on a local directory.
//!
//! Next (DESIGN.md §5): the A2A task methods (JSON-RPC and HTTP+JSON), SSE fed from the
//! committed log on every node, the worker API (claim with lease, heartbeat, ack) and metrics.

pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod http;
pub mod inspect;
pub mod load;
pub mod local;
pub mod serve;
