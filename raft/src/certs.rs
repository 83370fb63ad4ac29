//! The cluster's certificate authority and node certificates (`tasklog certs`), made with rcgen.
//!
//! A cluster trusts exactly one CA: every node holds `ca.pem` and its own `node-<id>.pem` +
//! `node-<id>.key`, and the transport ([`crate::network`]) accepts a peer only if its certificate
//! chains to that CA, in both directions. Node certificates carry the SANs `localhost`,
//! `127.0.0.1`, `::1`, [`node_server_name`] (so a client can insist on talking to node *id*, not
//! just to some member) and any names or addresses the operator adds.
//!
//! Files: certificates are written `0644`, private keys `0600` (the directory, when created here,
//! `0700`). Nothing is ever overwritten unless [`CertsOptions::force`] is set; without it, an
//! existing CA (`ca.pem` + `ca.key`) is reused to sign the requested node certificates, so nodes
//! can be added to a running cluster. Every check happens before the first byte is written.
//!
//! Keys are ECDSA P-256 (rcgen's default, signed with ring). Validity: from one hour ago (clock
//! skew between nodes) for [`CA_VALIDITY_DAYS`] / [`NODE_VALIDITY_DAYS`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::DnsName;
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// The CA certificate file in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key file in a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Days the CA certificate is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Days a node certificate is valid.
pub const NODE_VALIDITY_DAYS: i64 = 3650;
/// SANs every node certificate carries, so a local cluster works with no option at all.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const CA_COMMON_NAME: &str = "tasklog cluster CA";
const KEY_FILE_MODE: u32 = 0o600;
const CERT_FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// The certificate file of node `node_id`: `node-<id>.pem`.
pub fn node_cert_file(node_id: u64) -> String {
    format!("node-{node_id}.pem")
}

/// The private key file of node `node_id`: `node-<id>.key`.
pub fn node_key_file(node_id: u64) -> String {
    format!("node-{node_id}.key")
}

/// The DNS name in node `node_id`'s certificate that identifies it: `tasklog-node-<id>`.
/// A client that connects with this server name talks to that node or to nobody.
pub fn node_server_name(node_id: u64) -> String {
    format!("tasklog-node-{node_id}")
}

/// A cluster CA: its certificate and the key that signs node certificates.
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA with a fresh key.
    ///
    /// # Errors
    /// [`CertsError::Generate`] if rcgen fails (no randomness, for instance).
    pub fn generate() -> Result<Self, CertsError> {
        let key = KeyPair::generate().map_err(generate_error("the CA key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(generate_error("the CA certificate"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Each CA gets its own name (from its key), so a certificate from another cluster's CA
        // is reported as an unknown issuer, and operators can tell CAs apart.
        let key_id: String = params
            .key_identifier(&key)
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{CA_COMMON_NAME} {key_id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(generate_error("the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and key (as written by [`create`]).
    ///
    /// # Errors
    /// [`CertsError::BadCa`] when either does not parse.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertsError> {
        let bad = |reason: String| CertsError::BadCa { reason };
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate and key for node `node_id`, usable as both TLS server and client, with the
    /// [`DEFAULT_SANS`], [`node_server_name`] and `extra_sans` (DNS names or IP addresses).
    ///
    /// # Errors
    /// [`CertsError::BadSan`] for a SAN that is neither a DNS name nor an IP address,
    /// [`CertsError::Generate`] if rcgen fails.
    pub fn issue_node(&self, node_id: u64, extra_sans: &[String]) -> Result<NodeCert, CertsError> {
        let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect();
        sans.push(node_server_name(node_id));
        for san in extra_sans {
            if san.parse::<std::net::IpAddr>().is_err() && DnsName::try_from(san.as_str()).is_err()
            {
                return Err(CertsError::BadSan { san: san.clone() });
            }
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        let what = format!("the certificate of node {node_id}");
        let mut params = CertificateParams::new(sans).map_err(|e| CertsError::Generate {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node_server_name(node_id));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_DAYS);
        let key = KeyPair::generate().map_err(|e| CertsError::Generate {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CertsError::Generate {
                what,
                reason: e.to_string(),
            })?;
        Ok(NodeCert {
            node_id,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A node's certificate and private key, PEM.
#[derive(Clone)]
pub struct NodeCert {
    /// The node it was issued for.
    pub node_id: u64,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// What [`create`] makes.
#[derive(Debug, Clone, Default)]
pub struct CertsOptions {
    /// Node ids to issue certificates for (duplicates are ignored; at least one).
    pub nodes: Vec<u64>,
    /// Extra SANs for every node certificate: DNS names or IP addresses.
    pub extra_sans: Vec<String>,
    /// Replace existing files, including the CA (which invalidates every certificate it signed).
    pub force: bool,
}

/// What [`create`] did.
#[derive(Debug, Clone)]
pub struct CertsReport {
    /// Whether a new CA was made (otherwise the existing one signed the node certificates).
    pub ca_created: bool,
    /// The files written, in order.
    pub written: Vec<PathBuf>,
}

/// Creates (or reuses) the CA in `dir` and writes a certificate and key for each node.
///
/// Without `force`: if any node file already exists, or only one of `ca.pem` / `ca.key` does,
/// nothing is written and the error names the files; an existing CA signs the new certificates.
/// With `force`: a new CA and new node files replace whatever is there (each file is written to a
/// temporary name and renamed over the old one).
///
/// # Errors
/// [`CertsError::NoNodes`], [`CertsError::Exists`], [`CertsError::IncompleteCa`],
/// [`CertsError::BadCa`], [`CertsError::BadSan`], [`CertsError::Generate`], [`CertsError::Io`] naming the file.
pub fn create(dir: &Path, options: &CertsOptions) -> Result<CertsReport, CertsError> {
    let mut nodes = options.nodes.clone();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return Err(CertsError::NoNodes);
    }
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_cert_exists = exists(&ca_cert_path)?;
    let ca_key_exists = exists(&ca_key_path)?;
    let mut node_paths = Vec::with_capacity(nodes.len());
    for &node_id in &nodes {
        node_paths.push((
            node_id,
            dir.join(node_cert_file(node_id)),
            dir.join(node_key_file(node_id)),
        ));
    }

    if !options.force {
        let mut existing = Vec::new();
        for (_, cert, key) in &node_paths {
            for path in [cert, key] {
                if exists(path)? {
                    existing.push(path.clone());
                }
            }
        }
        if !existing.is_empty() {
            return Err(CertsError::Exists { paths: existing });
        }
        match (ca_cert_exists, ca_key_exists) {
            (true, false) => {
                return Err(CertsError::IncompleteCa {
                    present: ca_cert_path,
                    missing: ca_key_path,
                });
            }
            (false, true) => {
                return Err(CertsError::IncompleteCa {
                    present: ca_key_path,
                    missing: ca_cert_path,
                });
            }
            _ => {}
        }
    }

    let reuse_ca = !options.force && ca_cert_exists && ca_key_exists;
    let ca = if reuse_ca {
        let cert_pem = read_string(&ca_cert_path)?;
        let key_pem = read_string(&ca_key_path)?;
        ClusterCa::from_pem(&cert_pem, &key_pem)?
    } else {
        ClusterCa::generate()?
    };
    // Sign everything before writing anything, so a bad SAN leaves the directory as it was.
    let mut issued = Vec::with_capacity(node_paths.len());
    for (node_id, cert_path, key_path) in node_paths {
        issued.push((
            ca.issue_node(node_id, &options.extra_sans)?,
            cert_path,
            key_path,
        ));
    }

    create_dir(dir)?;
    let mut written = Vec::new();
    if !reuse_ca {
        write_file(
            &ca_key_path,
            ca.key_pem().as_bytes(),
            KEY_FILE_MODE,
            options.force,
        )?;
        written.push(ca_key_path);
        write_file(
            &ca_cert_path,
            ca.cert_pem().as_bytes(),
            CERT_FILE_MODE,
            options.force,
        )?;
        written.push(ca_cert_path);
    }
    for (node, cert_path, key_path) in issued {
        write_file(
            &key_path,
            node.key_pem.as_bytes(),
            KEY_FILE_MODE,
            options.force,
        )?;
        written.push(key_path);
        write_file(
            &cert_path,
            node.cert_pem.as_bytes(),
            CERT_FILE_MODE,
            options.force,
        )?;
        written.push(cert_path);
    }
    sync_dir(dir)?;
    Ok(CertsReport {
        ca_created: !reuse_ca,
        written,
    })
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn generate_error(what: &'static str) -> impl Fn(rcgen::Error) -> CertsError {
    move |e| CertsError::Generate {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

fn exists(path: &Path) -> Result<bool, CertsError> {
    path.try_exists().map_err(|source| CertsError::Io {
        op: "check",
        path: path.to_owned(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir).map_err(|source| CertsError::Io {
        op: "create directory",
        path: dir.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` with `mode`. Without `replace` the file must not exist (`O_EXCL`, so
/// a file created meanwhile is not clobbered either); with it, a temporary file is written,
/// synced and renamed over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), CertsError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| CertsError::Io { op, path, source }
    };
    let target = if replace {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let temp = path.with_file_name(name);
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove stale temporary", &temp)(e)),
        }
        temp
    } else {
        path.to_owned()
    };
    let mut open = OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file: File = open.open(&target).map_err(io("create", &target))?;
    file.write_all(bytes).map_err(io("write", &target))?;
    file.sync_all().map_err(io("sync", &target))?;
    drop(file);
    if replace {
        fs::rename(&target, path).map_err(io("rename into place", path))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), CertsError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CertsError::Io {
            op: "sync directory",
            path: dir.to_owned(),
            source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Why certificates could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CertsError {
    /// No node id was given.
    #[error("no node ids given: nothing to issue")]
    NoNodes,
    /// Files that would be overwritten.
    #[error(
        "refusing to overwrite {}: pass force (`tasklog certs --force`) to replace them \
         (a forced run also makes a new CA)",
        display_paths(paths)
    )]
    Exists {
        /// The files that exist.
        paths: Vec<PathBuf>,
    },
    /// Half a CA: a certificate without its key or the reverse.
    #[error(
        "{} exists but {} does not: restore it, or pass force to make a new CA",
        present.display(),
        missing.display()
    )]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The existing CA files do not parse.
    #[error("the existing CA in the certificate directory is unusable: {reason}")]
    BadCa {
        /// What is wrong.
        reason: String,
    },
    /// A SAN that is neither a DNS name nor an IP address.
    #[error("{san:?} is neither a DNS name nor an IP address")]
    BadSan {
        /// The SAN as given.
        san: String,
    },
    /// rcgen could not make a key or certificate.
    #[error("could not generate {what}: {reason}")]
    Generate {
        /// What was being made.
        what: String,
        /// rcgen's reason.
        reason: String,
    },
    /// A file operation failed.
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(nodes: &[u64]) -> CertsOptions {
        CertsOptions {
            nodes: nodes.to_vec(),
            extra_sans: vec!["db1.example.test".into(), "10.1.2.3".into()],
            force: false,
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_ca_and_nodes_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let report = create(&certs, &options(&[3, 1, 2, 1])).unwrap();
        assert!(report.ca_created);
        assert_eq!(report.written.len(), 2 + 3 * 2);
        for name in ["ca.pem", "ca.key", "node-1.pem", "node-1.key", "node-3.key"] {
            assert!(certs.join(name).is_file(), "{name}");
        }
        #[cfg(unix)]
        {
            assert_eq!(mode(&certs.join("ca.key")), 0o600);
            assert_eq!(mode(&certs.join("node-2.key")), 0o600);
            assert_eq!(mode(&certs.join("node-2.pem")), 0o644);
            assert_eq!(mode(&certs), 0o700);
        }
        let pem = fs::read_to_string(certs.join("node-2.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }

    #[test]
    fn refuses_to_overwrite_and_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &options(&[1, 2])).unwrap();
        let before = fs::read(dir.path().join("node-2.key")).unwrap();
        let error = create(dir.path(), &options(&[2, 3])).unwrap_err();
        assert!(
            matches!(&error, CertsError::Exists { paths } if paths.len() == 2),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("node-2.pem") && message.contains("--force"),
            "{message}"
        );
        // Nothing was written for node 3 either.
        assert!(!dir.path().join("node-3.pem").exists());
        assert_eq!(fs::read(dir.path().join("node-2.key")).unwrap(), before);
    }

    #[test]
    fn an_existing_ca_signs_new_nodes_and_force_replaces_everything() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &options(&[1])).unwrap();
        let ca = fs::read(dir.path().join("ca.pem")).unwrap();
        let report = create(dir.path(), &options(&[4])).unwrap();
        assert!(!report.ca_created);
        assert_eq!(report.written.len(), 2);
        assert_eq!(fs::read(dir.path().join("ca.pem")).unwrap(), ca);

        let node1 = fs::read(dir.path().join("node-1.key")).unwrap();
        let forced = CertsOptions {
            force: true,
            ..options(&[1])
        };
        let report = create(dir.path(), &forced).unwrap();
        assert!(report.ca_created);
        assert_ne!(fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert_ne!(fs::read(dir.path().join("node-1.key")).unwrap(), node1);
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join("node-1.key")), 0o600);
        assert!(!dir.path().join("node-1.key.tmp").exists());
    }

    #[test]
    fn half_a_ca_and_a_bad_ca_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let error = create(dir.path(), &options(&[1])).unwrap_err();
        assert!(matches!(error, CertsError::IncompleteCa { .. }), "{error}");
        fs::write(dir.path().join("ca.key"), "not a key").unwrap();
        let error = create(dir.path(), &options(&[1])).unwrap_err();
        assert!(matches!(error, CertsError::BadCa { .. }), "{error}");
        assert!(!dir.path().join("node-1.pem").exists());
    }

    #[test]
    fn bad_san_and_no_nodes_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = CertsOptions {
            extra_sans: vec!["not a name!".into()],
            ..options(&[1])
        };
        let error = create(dir.path(), &bad).unwrap_err();
        assert!(matches!(error, CertsError::BadSan { .. }), "{error}");
        assert!(!dir.path().join("ca.pem").exists());
        assert!(matches!(
            create(dir.path(), &options(&[])),
            Err(CertsError::NoNodes)
        ));
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let node = again.issue_node(7, &[]).unwrap();
        assert_eq!(node.node_id, 7);
        assert!(node.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{ca:?} {node:?}").contains("PRIVATE"));
    }
}
