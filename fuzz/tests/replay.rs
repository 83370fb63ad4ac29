//! Runs every fuzz target on the stable toolchain: each file in `fuzz/seeds/<target>/`, the seeds
//! `tasklog_fuzz::seeds` makes fresh from the engine, and a bounded, seeded batch of random and
//! mutated inputs, so CI exercises the targets without nightly or cargo-fuzz.
//!
//! Cases per target: `TASKLOG_FUZZ_CASES` (default 200); seed: `TASKLOG_FUZZ_SEED` (default
//! fixed, so a failure replays with the same command); only some targets: `TASKLOG_FUZZ_TARGETS`
//! (comma-separated names). A failing input is written to `target/fuzz-failures/` and its path
//! and hex are printed; copy it into `fuzz/seeds/<target>/` once the bug is fixed.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tasklog_fuzz::{TARGETS, Target, run_catching, seeds};

/// A tiny deterministic generator (xorshift64*), so the batch is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on the boundaries the decoders check.
const INTERESTING: &[u64] = &[
    0,
    1,
    7,
    8,
    31,
    32,
    63,
    64,
    0x7F,
    0x80,
    0xFF,
    0xFFFF,
    0x10000,
    8 * 1024 * 1024,
    8 * 1024 * 1024 + 1,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 62,
    (1 << 62) + 1,
    u64::MAX,
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(6) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            2 if len > 0 => input.truncate(rng.below(len)),
            3 => {
                let at = rng.below(len + 1);
                let extra: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, extra);
            }
            4 if len > 8 => {
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let at = rng.below(len - width + 1);
                input[at..at + width].copy_from_slice(&value[..width]);
            }
            5 if len > 1 => {
                // Remove a run.
                let at = rng.below(len);
                let end = (at + rng.below(64) + 1).min(len);
                input.drain(at..end);
            }
            6 if !corpus.is_empty() => {
                // Splice in a piece of another input.
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let end = (from + rng.below(256) + 1).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..end].iter().copied());
                }
            }
            7 if len > 0 => {
                // Flip the control byte's options.
                input[0] = rng.next() as u8;
            }
            _ => {
                let at = rng.below(len + 1);
                let zeros = rng.below(48);
                input.splice(at..at, std::iter::repeat_n(0u8, zeros));
            }
        }
    }
}

fn seed_files(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| {
                    let bytes = fs::read(e.path()).expect("read seed file");
                    (e.path(), bytes)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn fail(target: &str, what: &str, input: &[u8], error: &anyhow::Error) -> String {
    let mut hasher = DefaultHasher::new();
    input.hash(&mut hasher);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    let path = dir.join(format!("{target}-{:016x}", hasher.finish()));
    let saved = fs::create_dir_all(&dir)
        .and_then(|()| fs::write(&path, input))
        .map_or_else(
            |e| format!("(not saved: {e})"),
            |()| path.display().to_string(),
        );
    let hex: String = input.iter().take(512).map(|b| format!("{b:02x}")).collect();
    format!(
        "{target} failed on {what}: {error:#}\n  input saved to {saved}\n  input ({} bytes, hex, first 512): {hex}",
        input.len()
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn every_target_survives_its_seeds_and_a_seeded_batch() {
    let cases = env_u64("TASKLOG_FUZZ_CASES").unwrap_or(200);
    let seed = env_u64("TASKLOG_FUZZ_SEED").unwrap_or(0x7A5C_10C0_FFEE);
    let only = std::env::var("TASKLOG_FUZZ_TARGETS").ok();
    let generated = seeds::generate().expect("generate seeds");
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|t| t == *name))
        {
            continue;
        }
        let started = Instant::now();
        let target: Target = *target;
        let mut corpus: Vec<Vec<u8>> = Vec::new();
        for (path, bytes) in seed_files(name) {
            if let Err(e) = run_catching(target, &bytes) {
                failures.push(fail(
                    name,
                    &format!("seed file {}", path.display()),
                    &bytes,
                    &e,
                ));
            }
            corpus.push(bytes);
        }
        let files = corpus.len();
        for (_, seed_name, bytes) in generated.iter().filter(|(t, _, _)| t == name) {
            if let Err(e) = run_catching(target, bytes) {
                failures.push(fail(
                    name,
                    &format!("generated seed {seed_name}"),
                    bytes,
                    &e,
                ));
            }
            corpus.push(bytes.clone());
        }
        let mut name_hash = DefaultHasher::new();
        name.hash(&mut name_hash);
        let mut rng = Rng((seed ^ name_hash.finish()) | 1);
        let mut failed_cases = 0;
        for case in 0..cases {
            let mut input = if corpus.is_empty() || rng.below(4) == 0 {
                (0..rng.below(600)).map(|_| rng.next() as u8).collect()
            } else {
                corpus[rng.below(corpus.len())].clone()
            };
            mutate(&mut rng, &mut input, &corpus);
            if let Err(e) = run_catching(target, &input) {
                failures.push(fail(
                    name,
                    &format!("case {case} (seed {seed:#x})"),
                    &input,
                    &e,
                ));
                failed_cases += 1;
                if failed_cases >= 3 {
                    break;
                }
            }
        }
        eprintln!(
            "{name}: {files} seed files, {} generated seeds, {cases} cases in {:.2?}",
            corpus.len() - files,
            started.elapsed()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Regenerates `fuzz/seeds/` from the engine (run after a format change, then review the diff).
#[test]
#[ignore = "writes into the source tree; run by hand"]
fn write_seed_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let written = seeds::write_all(&root).expect("write seeds");
    eprintln!("wrote {written} seed files under {}", root.display());
}

/// Runs one target on one file without catching panics, so a failure shows its backtrace:
/// `TASKLOG_FUZZ_TARGET=segment_recover TASKLOG_FUZZ_FILE=path RUST_BACKTRACE=1 cargo test -p
/// tasklog-fuzz --test replay -- --ignored --exact replay_one_file`.
#[test]
#[ignore = "needs TASKLOG_FUZZ_TARGET and TASKLOG_FUZZ_FILE"]
fn replay_one_file() {
    let name = std::env::var("TASKLOG_FUZZ_TARGET").expect("TASKLOG_FUZZ_TARGET");
    let path = std::env::var("TASKLOG_FUZZ_FILE").expect("TASKLOG_FUZZ_FILE");
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target name");
    let bytes = fs::read(&path).expect("read the input");
    if let Err(e) = target(&bytes) {
        panic!("{name} on {path}: {e:#}");
    }
}
