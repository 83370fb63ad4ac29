//! `tasklog-benches`: criterion benchmarks (`cargo bench -p tasklog-benches`). Numbers are printed,
//! never asserted; see README.md for the figures and how they were measured.
