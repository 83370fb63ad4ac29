//! TLS for the transport: a node's certificate, key and cluster CA, and the rustls configurations
//! built from them (ring crypto, TLS 1.3 only, mutual authentication, ALPN [`ALPN`]).
//!
//! Trust is the cluster CA and nothing else: the server requires a client certificate chaining to
//! it (`WebPkiClientVerifier` over a root store holding only `ca.pem`), and the client verifies the
//! server's certificate against the same roots and the server name it dialled. The system's roots
//! are never consulted. A peer with a foreign, missing or expired certificate fails the handshake.
//!
//! This module knows files and rustls; it does not know QUIC (the transport wraps the configs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;

use crate::certs;

/// The ALPN protocol both sides require: the transport's envelope, version 1.
pub const ALPN: &[u8] = b"tasklog-raft/1";

/// A node's TLS identity and the CA it trusts.
pub struct TlsMaterial {
    roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsMaterial")
            .field("roots", &self.roots.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsMaterial {
    /// Loads node `node_id`'s material from a directory made by `tasklog certs`
    /// ([`certs::create`]): `ca.pem`, `node-<id>.pem`, `node-<id>.key`.
    ///
    /// # Errors
    /// As [`TlsMaterial::load`].
    pub fn load_node(dir: &Path, node_id: u64) -> Result<Self, TlsError> {
        Self::load(
            &dir.join(certs::CA_CERT_FILE),
            &dir.join(certs::node_cert_file(node_id)),
            &dir.join(certs::node_key_file(node_id)),
        )
    }

    /// Loads the CA certificate(s) (one or more, e.g. old and new during a rotation), the node's
    /// certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), all PEM.
    ///
    /// A key file that others can read is loaded, with a warning.
    ///
    /// # Errors
    /// [`TlsError::Read`] or [`TlsError::Pem`] naming the file, [`TlsError::Config`] when the key
    /// does not belong to the certificate.
    pub fn load(ca_pem: &Path, cert_pem: &Path, key_pem: &Path) -> Result<Self, TlsError> {
        let roots = certificates(ca_pem, &read(ca_pem)?)?;
        let chain = certificates(cert_pem, &read(cert_pem)?)?;
        warn_if_readable_by_others(key_pem);
        let key = private_key(key_pem, &read(key_pem)?)?;
        Self::checked(roots, chain, key)
    }

    /// Material from PEM text in memory (tests, or keys kept elsewhere than files).
    ///
    /// # Errors
    /// [`TlsError::Pem`] (the path names which input: `<ca>`, `<cert>`, `<key>`),
    /// [`TlsError::Config`] when the key does not belong to the certificate.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let roots = certificates(Path::new("<ca>"), ca_pem.as_bytes())?;
        let chain = certificates(Path::new("<cert>"), cert_pem.as_bytes())?;
        let key = private_key(Path::new("<key>"), key_pem.as_bytes())?;
        Self::checked(roots, chain, key)
    }

    fn checked(
        roots: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let material = Self { roots, chain, key };
        // Building both configs checks the roots parse and the key matches the certificate, so a
        // mistake shows at load time rather than at the first handshake.
        material.server_config()?;
        material.client_config()?;
        Ok(material)
    }

    /// The rustls server configuration: TLS 1.3, ring, client certificates required and verified
    /// against the CA, ALPN [`ALPN`].
    ///
    /// # Errors
    /// [`TlsError::Config`] when rustls refuses the material.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.root_store()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| config_error("client certificate verifier", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("server protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| config_error("server certificate and key", e))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.max_early_data_size = 0;
        Ok(Arc::new(config))
    }

    /// The rustls client configuration: TLS 1.3, ring, the server verified against the CA only,
    /// the node's certificate presented, ALPN [`ALPN`].
    ///
    /// # Errors
    /// [`TlsError::Config`] when rustls refuses the material.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("client protocol versions", e))?
            .with_root_certificates(self.root_store()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| config_error("client certificate and key", e))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        for root in &self.roots {
            store
                .add(root.clone())
                .map_err(|e| config_error("CA certificate", e))?;
        }
        Ok(store)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &'static str, error: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        what,
        reason: error.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE section".to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY section".to_owned(),
            other => other.to_string(),
        },
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "private key is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// TLS material that cannot be loaded or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("bad PEM in {}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the material (a key that does not match its certificate, a CA that is not a
    /// certificate, ...).
    #[error("TLS configuration failed ({what}): {reason}")]
    Config {
        /// Which part of the configuration.
        what: &'static str,
        /// rustls's reason.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertsOptions, ClusterCa};

    #[test]
    fn loads_what_certs_writes() {
        let dir = tempfile::tempdir().unwrap();
        certs::create(
            dir.path(),
            &CertsOptions {
                nodes: vec![1],
                ..CertsOptions::default()
            },
        )
        .unwrap();
        let material = TlsMaterial::load_node(dir.path(), 1).unwrap();
        assert_eq!(material.roots.len(), 1);
        assert_eq!(material.chain.len(), 1);
        let server = material.server_config().unwrap();
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        assert!(format!("{material:?}").contains("TlsMaterial"));
    }

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = TlsMaterial::load_node(dir.path(), 9).unwrap_err();
        assert!(matches!(&error, TlsError::Read { path, .. } if path.ends_with("ca.pem")));
        assert!(error.to_string().contains("ca.pem"), "{error}");

        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue_node(9, &[]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("node-9.pem"), "garbage").unwrap();
        std::fs::write(dir.path().join("node-9.key"), &node.key_pem).unwrap();
        let error = TlsMaterial::load_node(dir.path(), 9).unwrap_err();
        assert!(
            matches!(&error, TlsError::Pem { path, .. } if path.ends_with("node-9.pem")),
            "{error}"
        );

        std::fs::write(dir.path().join("node-9.pem"), &node.cert_pem).unwrap();
        std::fs::write(dir.path().join("node-9.key"), &node.cert_pem).unwrap();
        let error = TlsMaterial::load_node(dir.path(), 9).unwrap_err();
        assert!(
            matches!(&error, TlsError::Pem { path, reason } if path.ends_with("node-9.key")
                && reason.contains("PRIVATE KEY")),
            "{error}"
        );

        let truncated = &node.cert_pem[..node.cert_pem.len() / 2];
        let error = TlsMaterial::from_pem(ca.cert_pem(), truncated, &node.key_pem).unwrap_err();
        assert!(matches!(error, TlsError::Pem { .. }), "{error}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let ca = ClusterCa::generate().unwrap();
        let one = ca.issue_node(1, &[]).unwrap();
        let two = ca.issue_node(2, &[]).unwrap();
        let error = TlsMaterial::from_pem(ca.cert_pem(), &one.cert_pem, &two.key_pem).unwrap_err();
        assert!(matches!(error, TlsError::Config { .. }), "{error}");
    }
}
