//! `tasklog-benches`: criterion benchmarks (`cargo bench -p tasklog-benches`). Numbers are printed,
//! never asserted; see README.md for the figures and how they were measured.
//!
//! This library holds what the bench targets share: the 300-byte payload of DESIGN.md §6, a tiny
//! deterministic generator for random positions, and the raw `pwrite + fdatasync` baseline that the
//! engine's durable append is compared against (E1). [`peers`] holds the embedded comparison:
//! the same task-store workload on tasklog, SQLite, redb and fjall (`benches/benches/peers.rs`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub mod peers;

/// Size of every benchmark payload (DESIGN.md §6: 300-byte events).
pub const PAYLOAD_BYTES: usize = 300;

/// A deterministic [`PAYLOAD_BYTES`]-byte payload derived from `seed`.
pub fn payload(seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    (0..PAYLOAD_BYTES).map(|_| rng.next_u64() as u8).collect()
}

/// Marsaglia's xorshift64: deterministic, dependency-free, good enough to pick read positions.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator seeded with `seed` (any value; zero is remapped, xorshift must not start at 0).
    pub fn new(seed: u64) -> Self {
        XorShift64((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (`bound > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The raw baseline for E1: a plain file that grows by one `pwrite` at its end followed by one
/// `fdatasync` (`File::sync_data`) per record, as the log's active segment does.
#[derive(Debug)]
pub struct RawAppender {
    file: File,
    end: u64,
}

impl RawAppender {
    /// Creates (or truncates) the file at `path`.
    ///
    /// # Errors
    /// The `open` failure.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(RawAppender { file, end: 0 })
    }

    /// Writes `bytes` at the end of the file and `fdatasync`s it.
    ///
    /// # Errors
    /// The failed write or sync.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.end)?;
        self.end += bytes.len() as u64;
        self.file.sync_data()
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.end
    }
}

/// Trimmed stdout of a command, if it runs, succeeds and prints something.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Facts about the machine a summary bench ran on, as (key, value) pairs: UTC date, CPU count and
/// model, kernel, and the path and filesystem of `dir` (where the bench wrote its files).
pub fn machine_facts(dir: &Path) -> Vec<(&'static str, String)> {
    let nproc =
        std::thread::available_parallelism().map_or_else(|e| e.to_string(), |n| n.to_string());
    let date = command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("unix {secs}")
    });
    let dir_text = dir.display().to_string();
    let filesystem = command_output(
        "findmnt",
        &["-no", "SOURCE,FSTYPE,OPTIONS", "--target", &dir_text],
    )
    .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
    .unwrap_or_else(|| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = command_output("uname", &["-sr"]).unwrap_or_else(|| "unknown".into());
    vec![
        ("date", date),
        ("nproc", nproc),
        ("cpu", cpu),
        ("kernel", kernel),
        ("path", dir_text),
        ("filesystem", filesystem),
    ]
}

/// The opening of a summary's JSON document: the machine facts, then the start of the workloads
/// array (the caller appends the rows and closes it with `\n  ]\n}\n`).
pub fn json_head(facts: &[(&str, String)]) -> String {
    let facts_json: Vec<String> = facts
        .iter()
        .map(|(k, v)| format!("    {}: {}", json_string(k), json_string(v)))
        .collect();
    format!(
        "{{\n  \"machine\": {{\n{}\n  }},\n  \"workloads\": [\n",
        facts_json.join(",\n")
    )
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a JSON number with three decimals, or `null` when it is not finite.
pub fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".into()
    }
}
