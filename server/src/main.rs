//! `tasklog`: the command-line entry point. Parses arguments, sets up logging, runs a command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tasklog_raft::certs;
use tasklog_server::admin::{self, MemberCommand, NodesArg};
use tasklog_server::cluster::{self, ClusterArgs};
use tasklog_server::config::{NodeConfig, ServeArgs};
use tasklog_server::demo::{self, DemoArgs};
use tasklog_server::load::{self, LoadArgs};
use tasklog_server::{inspect, serve};

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
    /// Run a local three-node cluster (real processes, QUIC with mutual TLS on 127.0.0.1):
    /// certificates and data directories are made on the first run; a demo load writes task
    /// events through every node and a table shows each node's role, commit and apply positions
    /// and whether it already sees the last write. Ctrl-C stops every node cleanly.
    Cluster(ClusterArgs),
    /// Run one node (flags, or a TOML file with --config).
    Serve(ServeArgs),
    /// Show each given node's role, term, leader, positions and members.
    Status(NodesArg),
    /// Change the cluster's members (sent to the leader among the given nodes).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Write task events to running nodes from W concurrent writers (optimistic concurrency,
    /// durable replicated acknowledgements) and print throughput and latency.
    Load(LoadArgs),
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
    let cli = Cli::parse();
    // A node logs what it does; the one-shot commands only what goes wrong.
    let default_filter = match cli.command {
        Command::Serve(_) => "info,openraft=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = NodeConfig::load(&args)?;
            runtime()?.block_on(serve::run(config, serve::shutdown_signal()))?;
        }
        Command::Status(nodes) => print!("{}", admin::status(&nodes)),
        Command::Member(command) => {
            let status = admin::member(&command)?;
            println!(
                "done; leader {:?}, voters {:?}, learners {:?}",
                status.leader, status.voters, status.learners
            );
        }
        Command::Load(args) => print!("{}", load::render(&load::run(&args)?)),
        Command::Cluster(args) => {
            runtime()?.block_on(cluster::run(args))?;
        }
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
