//! `tasklog-tests`: the test suites that need more than one module, one binary per suite
//! (`engine/`: model, crash and recovery tests of the segment log). Later suites: `sim/`
//! (deterministic cluster), `cluster/` (real processes over QUIC + TLS), `http/` (A2A end to end).
