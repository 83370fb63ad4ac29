//! Node processes on this machine: what the process tests and the cluster bench start. Each
//! node is a `tasklog serve` child on 127.0.0.1 with free ports, certificates from one CA in
//! `<root>/certs`, data in `<root>/node-N`, output in `<root>/node-N.log`; node 1 bootstraps.
//! A node can be killed (SIGKILL), stopped (SIGTERM, waiting for a clean exit) and restarted on
//! its directory and addresses.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tasklog_raft::NodeId;
use tasklog_raft::certs::{self, CertsOptions};

use crate::client::Client;

/// Deadline of one HTTP call made through [`LocalCluster::client`].
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// One node process.
struct NodeProcess {
    args: Vec<String>,
    raft_addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// Node processes on loopback.
pub struct LocalCluster {
    exe: PathBuf,
    root: PathBuf,
    nodes: BTreeMap<NodeId, NodeProcess>,
    clients: BTreeMap<NodeId, Client>,
}

impl LocalCluster {
    /// Makes certificates for nodes `1..=n` under `root` and starts them (`exe` is the `tasklog`
    /// binary; `extra_args` go to every `serve`, e.g. timing flags). Returns at once; see
    /// [`LocalCluster::wait_for_leader`].
    ///
    /// # Errors
    /// Certificates that cannot be made, a process that cannot be started.
    pub fn start(exe: &Path, root: &Path, n: u64, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_spares(exe, root, n, 0, extra_args)
    }

    /// As [`LocalCluster::start`], with `spares` more nodes (ids `n + 1 ..`) given certificates
    /// and addresses but not started and not members: start one with
    /// [`LocalCluster::start_node`] and add it as a learner.
    ///
    /// # Errors
    /// As [`LocalCluster::start`].
    pub fn start_with_spares(
        exe: &Path,
        root: &Path,
        n: u64,
        spares: u64,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let ids: Vec<NodeId> = (1..=n + spares).collect();
        certs::create(
            &root.join("certs"),
            &CertsOptions {
                nodes: ids.clone(),
                ..CertsOptions::default()
            },
        )
        .context("make certificates")?;
        let mut layout = BTreeMap::new();
        for &id in &ids {
            layout.insert(id, (free_udp()?, free_tcp()?));
        }
        Self::launch(exe, root, &layout, n, extra_args)
    }

    /// Starts nodes `1..=members` of `layout` (id → QUIC and HTTP addresses) with certificates
    /// already in `<root>/certs`; the other ids of `layout` are spares. Node 1 bootstraps (a
    /// node already in a cluster ignores that, so a root can be started again).
    ///
    /// # Errors
    /// A process that cannot be started or a log file that cannot be opened.
    pub fn launch(
        exe: &Path,
        root: &Path,
        layout: &BTreeMap<NodeId, (SocketAddr, SocketAddr)>,
        members: u64,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cluster = LocalCluster {
            exe: exe.to_owned(),
            root: root.to_owned(),
            nodes: BTreeMap::new(),
            clients: BTreeMap::new(),
        };
        for (&id, &(raft_addr, http)) in layout {
            let mut args: Vec<String> = vec![
                "serve".into(),
                "--id".into(),
                id.to_string(),
                "--data-dir".into(),
                root.join(format!("node-{id}")).display().to_string(),
                "--raft-addr".into(),
                raft_addr.to_string(),
                "--http-addr".into(),
                http.to_string(),
                "--certs-dir".into(),
                root.join("certs").display().to_string(),
            ];
            args.extend(extra_args.iter().map(|a| (*a).to_owned()));
            for (&peer, (addr, _)) in layout {
                if peer != id && peer <= members {
                    args.push("--peer".into());
                    args.push(format!("{peer}={addr}"));
                }
            }
            if id == 1 {
                args.push("--bootstrap".into());
            }
            cluster.nodes.insert(
                id,
                NodeProcess {
                    args,
                    raft_addr,
                    log: root.join(format!("node-{id}.log")),
                    child: None,
                },
            );
            cluster
                .clients
                .insert(id, Client::new(format!("http://{http}"), CALL_TIMEOUT));
            if id <= members {
                cluster.start_node(id)?;
            }
        }
        Ok(cluster)
    }

    /// The ids of the nodes running now.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A node's HTTP client.
    ///
    /// # Panics
    /// For an id that is not a node (a caller's bug).
    pub fn client(&self, id: NodeId) -> &Client {
        &self.clients[&id]
    }

    /// A node's QUIC address.
    pub fn raft_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.nodes.get(&id).map(|n| n.raft_addr)
    }

    /// A node's data directory.
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    /// Starts a node that is not running (again, on its directory and addresses).
    ///
    /// # Errors
    /// The process cannot be started.
    pub fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let exe = self.exe.clone();
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if node.child.is_some() {
            bail!("node {id} is running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        let mut command = Command::new(exe);
        // Its own process group: a terminal's Ctrl-C reaches whoever started the node, which
        // stops it in order (and kills it when dropped).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .args(&node.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start node {id}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Kills a node with SIGKILL and reaps it.
    ///
    /// # Errors
    /// The node is not running, or the kill failed.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let mut child = node.child.take().context("node not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops a node with SIGTERM and waits for it to exit (killing it after `timeout`).
    ///
    /// # Errors
    /// The node is not running; it did not exit within `timeout`.
    pub fn stop(&mut self, id: NodeId, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let mut child = node.child.take().context("node not running")?;
        terminate(child.id());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {id} did not stop within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The leader every node in `among` agrees on, once they do (within `timeout`).
    ///
    /// # Errors
    /// No agreement within `timeout`.
    pub fn wait_for_leader(&self, among: &[NodeId], timeout: Duration) -> anyhow::Result<NodeId> {
        let start = Instant::now();
        loop {
            let statuses: Option<Vec<_>> = among
                .iter()
                .map(|id| self.clients.get(id).and_then(|c| c.status().ok()))
                .collect();
            if let Some(statuses) = statuses
                && let Some(leader) = statuses.iter().find(|s| s.role == "leader")
                && statuses.iter().all(|s| s.leader == Some(leader.node_id))
            {
                return Ok(leader.node_id);
            }
            if start.elapsed() > timeout {
                bail!("no leader agreed on by nodes {among:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's output so far, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            out.push_str(&format!(
                "--- node {id} ---\n{}\n",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            ));
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Asks a process to stop (SIGTERM).
pub fn terminate(pid: u32) {
    #[cfg(unix)]
    {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid
            && let Err(error) = rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        {
            tracing::warn!(%error, "SIGTERM failed");
        }
    }
    #[cfg(not(unix))]
    drop(pid);
}
