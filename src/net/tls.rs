//! Client-side TLS: build a rustls acceptor from PEM files (reloadable on SIGHUP), with ALPN
//! `postgresql` so PostgreSQL 17's direct TLS negotiation works too.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Config(String),
}

/// The ALPN protocol name PostgreSQL registered for direct TLS connections.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

pub fn load_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_file.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_file.display().to_string(),
            reason: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
