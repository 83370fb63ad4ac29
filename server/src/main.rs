//! `tasklog`: the command-line entry point. Parses arguments, sets up logging, runs a command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tasklog_server::demo::{self, DemoArgs};
use tasklog_server::inspect;

#[derive(Parser)]
#[command(
    name = "tasklog",
    version,
    about = "A durable, replicated task log for A2A agent servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write N events into a local data directory with W concurrent writers (fsync on), reopen
    /// it, read everything back and print what was found and how fast.
    Demo {
        /// Data directory (created if missing; an existing log is appended to).
        #[arg(long, default_value = "tasklog-data")]
        data_dir: PathBuf,
        /// Number of events to write.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Concurrent writer threads.
        #[arg(long, default_value_t = 64)]
        writers: u64,
        /// Payload bytes per event.
        #[arg(long, default_value_t = 300)]
        payload_bytes: usize,
    },
    /// Show what a data directory holds: segments, positions, tasks by state, recovery.
    Inspect {
        /// The data directory.
        dir: PathBuf,
    },
    /// Check every byte of a data directory (frames, CRCs, positions, offset indexes, task
    /// records) without repairing anything; exits non-zero on the first problem.
    Verify {
        /// The data directory.
        dir: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo {
            data_dir,
            events,
            writers,
            payload_bytes,
        } => {
            let args = DemoArgs {
                data_dir,
                events,
                writers,
                payload_bytes,
            };
            let report = demo::run(&args)?;
            print!("{}", demo::render(&args, &report));
        }
        Command::Inspect { dir } => print!("{}", inspect::inspect(&dir)?),
        Command::Verify { dir, quiet } => print!("{}", inspect::verify(&dir, !quiet)?),
    }
    Ok(())
}
