//! A node's configuration: command-line flags, an optional TOML file with the same keys, flags
//! winning over the file.
//!
//! ```toml
//! id = 1
//! data_dir = "data/node-1"
//! raft_addr = "127.0.0.1:7001"      # QUIC, mutual TLS, between nodes
//! http_addr = "127.0.0.1:8001"      # clients, workers, operators
//! certs_dir = "certs"               # ca.pem, node-1.pem, node-1.key (`tasklog certs`)
//! peers = ["2=127.0.0.1:7002", "3=127.0.0.1:7003"]
//! bootstrap = true                  # on the first start only: make the cluster from id + peers
//! retention_ttl_secs = 86400        # delete finished tasks a day after they finished
//! retention_max_terminal_tasks = 100000  # and keep at most this many finished tasks
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use tasklog_engine::Retention;
use tasklog_raft::{NodeId, Timing};

/// `tasklog serve`'s flags; every one can come from the config file instead.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the keys below (flags win over it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Data directory (the log, checkpoints, Raft meta, snapshots); created if missing.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// QUIC address for the other nodes (mutual TLS).
    #[arg(long)]
    pub raft_addr: Option<SocketAddr>,
    /// HTTP address for clients, workers and operators.
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Directory with ca.pem and this node's certificate and key (`tasklog certs`).
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// Another member as ID=HOST:PORT (its QUIC address); repeatable.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    pub peers: Vec<String>,
    /// Make the cluster (this node and its peers as voters) if this node has never been part of
    /// one. Give it to one node, on its first start; later starts ignore it.
    #[arg(long)]
    pub bootstrap: bool,
    /// Raft heartbeat interval in milliseconds (default 100).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout in milliseconds, the lower bound (default 300; the upper is twice
    /// it). It must exceed twice the heartbeat.
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Delete terminal tasks (completed, failed, canceled, rejected) this many seconds after
    /// their final status. The leader decides; the deletes are replicated writes.
    #[arg(long)]
    pub retention_ttl_secs: Option<u64>,
    /// Keep at most this many terminal tasks; the oldest go first.
    #[arg(long)]
    pub retention_max_terminal_tasks: Option<u64>,
    /// How often the leader applies the retention policy, in milliseconds (default 10,000).
    #[arg(long)]
    pub retention_interval_ms: Option<u64>,
}

/// The config file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    id: Option<NodeId>,
    data_dir: Option<PathBuf>,
    raft_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    certs_dir: Option<PathBuf>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    bootstrap: bool,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    retention_ttl_secs: Option<u64>,
    retention_max_terminal_tasks: Option<u64>,
    retention_interval_ms: Option<u64>,
}

/// A node's complete, checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Data directory.
    pub data_dir: PathBuf,
    /// QUIC address.
    pub raft_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// Certificate directory.
    pub certs_dir: PathBuf,
    /// The other members: id → QUIC address.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Make the cluster on the first start.
    pub bootstrap: bool,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the election timeout (the upper is twice it).
    pub election_timeout: Duration,
    /// Which terminal tasks the leader deletes (nothing when both limits are unset).
    pub retention: Retention,
    /// How often the leader applies `retention`.
    pub retention_interval: Duration,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for a node.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A required setting is missing.
    #[error("missing --{flag} (or `{key}` in the config file)")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// The file key.
        key: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Merges `args` over the config file they name (if any) and checks the result.
    ///
    /// # Errors
    /// An unreadable or invalid file, a missing or invalid setting.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ConfigFile::default(),
        };
        fn required<T>(
            value: Option<T>,
            flag: &'static str,
            key: &'static str,
        ) -> Result<T, ConfigError> {
            value.ok_or(ConfigError::Missing { flag, key })
        }
        let id = required(args.id.or(file.id), "id", "id")?;
        if id == 0 {
            return Err(ConfigError::Invalid(
                "node id 0 is reserved; use 1 or more".into(),
            ));
        }
        let peer_specs = if args.peers.is_empty() {
            &file.peers
        } else {
            &args.peers
        };
        let mut peers = BTreeMap::new();
        for spec in peer_specs {
            let (peer, addr) = parse_peer(spec)?;
            if peer == id {
                return Err(ConfigError::Invalid(format!(
                    "peer {spec:?} has this node's own id {id}"
                )));
            }
            if peers.insert(peer, addr).is_some() {
                return Err(ConfigError::Invalid(format!("peer id {peer} given twice")));
            }
        }
        let heartbeat =
            Duration::from_millis(args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(100));
        let election_timeout = Duration::from_millis(
            args.election_timeout_ms
                .or(file.election_timeout_ms)
                .unwrap_or(300),
        );
        if heartbeat.is_zero() || election_timeout <= heartbeat * 2 {
            return Err(ConfigError::Invalid(format!(
                "the election timeout ({election_timeout:?}) must be more than twice the heartbeat \
                 ({heartbeat:?}), which must not be zero"
            )));
        }
        let retention_ttl_ms = match args.retention_ttl_secs.or(file.retention_ttl_secs) {
            Some(secs) => Some(secs.checked_mul(1000).ok_or_else(|| {
                ConfigError::Invalid(format!("retention TTL of {secs} s is too long"))
            })?),
            None => None,
        };
        let retention = Retention {
            terminal_ttl_ms: retention_ttl_ms,
            terminal_count_max: args
                .retention_max_terminal_tasks
                .or(file.retention_max_terminal_tasks)
                .map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
        };
        let retention_interval = Duration::from_millis(
            args.retention_interval_ms
                .or(file.retention_interval_ms)
                .unwrap_or(10_000),
        );
        if retention_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "the retention interval must not be zero".into(),
            ));
        }
        let config = NodeConfig {
            id,
            data_dir: required(
                args.data_dir.clone().or(file.data_dir),
                "data-dir",
                "data_dir",
            )?,
            raft_addr: required(args.raft_addr.or(file.raft_addr), "raft-addr", "raft_addr")?,
            http_addr: required(args.http_addr.or(file.http_addr), "http-addr", "http_addr")?,
            certs_dir: required(
                args.certs_dir.clone().or(file.certs_dir),
                "certs-dir",
                "certs_dir",
            )?,
            peers,
            bootstrap: args.bootstrap || file.bootstrap,
            heartbeat,
            election_timeout,
            retention,
            retention_interval,
        };
        if config.raft_addr == config.http_addr && config.raft_addr.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "the QUIC and HTTP addresses are both {}",
                config.raft_addr
            )));
        }
        Ok(config)
    }

    /// The initial members: this node and its peers, id → QUIC address.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let mut members: BTreeMap<NodeId, String> = self
            .peers
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        members.insert(self.id, self.raft_addr.to_string());
        members
    }

    /// Raft timing.
    pub fn timing(&self) -> Timing {
        Timing {
            heartbeat: self.heartbeat,
            election: (self.election_timeout, self.election_timeout * 2),
        }
    }
}

fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `ID=HOST:PORT`.
fn parse_peer(spec: &str) -> Result<(NodeId, SocketAddr), ConfigError> {
    let invalid =
        |why: String| ConfigError::Invalid(format!("peer {spec:?}: {why} (want ID=HOST:PORT)"));
    let (id, addr) = spec
        .split_once('=')
        .ok_or_else(|| invalid("no '='".into()))?;
    let id: NodeId = id.trim().parse().map_err(|e| invalid(format!("id: {e}")))?;
    if id == 0 {
        return Err(invalid("id 0 is reserved".into()));
    }
    let addr = addr
        .trim()
        .parse()
        .map_err(|e| invalid(format!("address: {e}")))?;
    Ok((id, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            id: Some(1),
            data_dir: Some("d".into()),
            raft_addr: Some("127.0.0.1:7001".parse().unwrap()),
            http_addr: Some("127.0.0.1:8001".parse().unwrap()),
            certs_dir: Some("c".into()),
            peers: vec!["2=127.0.0.1:7002".into(), " 3 = 127.0.0.1:7003".into()],
            ..ServeArgs::default()
        }
    }

    #[test]
    fn flags_alone_make_a_config() {
        let config = NodeConfig::load(&args()).unwrap();
        assert_eq!(config.members().len(), 3);
        assert_eq!(config.members()[&1], "127.0.0.1:7001");
        assert_eq!(config.timing().election.1, Duration::from_millis(600));
        assert!(!config.bootstrap);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 7\ndata_dir = \"from-file\"\nraft_addr = \"127.0.0.1:7007\"\nhttp_addr = \
             \"127.0.0.1:8007\"\ncerts_dir = \"certs\"\npeers = [\"8=127.0.0.1:7008\"]\nbootstrap = true\n",
        )
        .unwrap();
        let config = NodeConfig::load(&ServeArgs {
            config: Some(path.clone()),
            data_dir: Some("from-flag".into()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(config.id, 7);
        assert_eq!(config.data_dir, PathBuf::from("from-flag"));
        assert!(config.bootstrap);
        assert_eq!(config.peers.len(), 1);

        std::fs::write(&path, "id = 7\nport = 3\n").unwrap();
        let error = NodeConfig::load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("port"), "{error}");
    }

    #[test]
    fn retention_comes_from_flags_or_the_file_and_is_off_by_default() {
        let config = NodeConfig::load(&args()).unwrap();
        assert_eq!(config.retention, Retention::default());
        assert_eq!(config.retention_interval, Duration::from_secs(10));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "retention_ttl_secs = 60\nretention_max_terminal_tasks = 5\nretention_interval_ms = 250\n",
        )
        .unwrap();
        let config = NodeConfig::load(&ServeArgs {
            config: Some(path),
            retention_max_terminal_tasks: Some(9),
            ..args()
        })
        .unwrap();
        assert_eq!(config.retention.terminal_ttl_ms, Some(60_000));
        assert_eq!(
            config.retention.terminal_count_max,
            Some(9),
            "the flag wins"
        );
        assert_eq!(config.retention_interval, Duration::from_millis(250));
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (ServeArgs { id: None, ..args() }, "--id"),
            (
                ServeArgs {
                    id: Some(0),
                    ..args()
                },
                "reserved",
            ),
            (
                ServeArgs {
                    peers: vec!["2:127.0.0.1:7002".into()],
                    ..args()
                },
                "no '='",
            ),
            (
                ServeArgs {
                    peers: vec!["x=127.0.0.1:7002".into()],
                    ..args()
                },
                "id",
            ),
            (
                ServeArgs {
                    peers: vec!["2=nowhere".into()],
                    ..args()
                },
                "address",
            ),
            (
                ServeArgs {
                    peers: vec!["1=127.0.0.1:7002".into()],
                    ..args()
                },
                "own id",
            ),
            (
                ServeArgs {
                    peers: vec!["2=127.0.0.1:7002".into(), "2=127.0.0.1:7003".into()],
                    ..args()
                },
                "twice",
            ),
            (
                ServeArgs {
                    http_addr: Some("127.0.0.1:7001".parse().unwrap()),
                    ..args()
                },
                "both",
            ),
            (
                ServeArgs {
                    retention_interval_ms: Some(0),
                    ..args()
                },
                "retention interval",
            ),
            (
                ServeArgs {
                    retention_ttl_secs: Some(u64::MAX),
                    ..args()
                },
                "too long",
            ),
            (
                ServeArgs {
                    election_timeout_ms: Some(150),
                    ..args()
                },
                "twice the heartbeat",
            ),
            (
                ServeArgs {
                    config: Some("/nonexistent/tasklog.toml".into()),
                    ..args()
                },
                "cannot read",
            ),
        ];
        for (args, expected) in cases {
            let error = NodeConfig::load(&args).unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
