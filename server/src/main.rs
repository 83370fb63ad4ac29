//! `tasklog`: the command-line entry point. Parses arguments, sets up logging, runs a command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tasklog_raft::certs;
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
    /// Create the cluster CA (or reuse the one already in DIR) and a certificate and private key
    /// for each node, for the mutual-TLS transport between nodes. Keys are written 0600; existing
    /// files are never overwritten without --force (which also makes a new CA).
    Certs {
        /// Directory for ca.pem, ca.key, node-N.pem and node-N.key (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Node ids, comma-separated (e.g. 1,2,3).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        nodes: Vec<u64>,
        /// Extra DNS name or IP address for every node certificate (repeatable); localhost,
        /// 127.0.0.1, ::1 and tasklog-node-N are always included.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace existing files, including the CA.
        #[arg(long)]
        force: bool,
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
        Command::Certs {
            dir,
            nodes,
            sans,
            force,
        } => {
            let options = certs::CertsOptions {
                nodes,
                extra_sans: sans,
                force,
            };
            let report = certs::create(&dir, &options)?;
            if report.ca_created {
                println!("new cluster CA in {}", dir.display());
            } else {
                println!("reused the cluster CA in {}", dir.display());
            }
            for path in &report.written {
                println!("wrote {}", path.display());
            }
        }
        Command::Inspect { dir } => print!("{}", inspect::inspect(&dir)?),
        Command::Verify { dir, quiet } => print!("{}", inspect::verify(&dir, !quiet)?),
    }
    Ok(())
}
