//! TLS from Perseus to the destination servers with libpq's `sslmode` meanings: the rustls
//! client configurations per SSLMode/RootCertFile, and the SSLRequest negotiation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::ServerStream;
use crate::config::{Config, ServerTlsSettings, SslMode};
use crate::net::tls::ALPN_POSTGRESQL;

/// The SSLRequest packet: length 8, then the magic code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A server TLS policy that cannot be built; names the config place and the file.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("{place}: cannot read RootCertFile {path}: {reason}")]
    RootFile {
        place: String,
        path: String,
        reason: String,
    },
    #[error("{place}: RootCertFile {path} holds no usable CA certificate")]
    NoRoots { place: String, path: String },
    #[error("{place}: {reason}")]
    Config { place: String, reason: String },
}

/// Why a TLS connection to a server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error(
        "server {addr} does not support TLS (it refused the SSLRequest), but SSLMode is {mode}"
    )]
    Refused {
        addr: SocketAddr,
        mode: &'static str,
    },
    #[error("server {addr} answered the SSLRequest with byte {byte:#04x} instead of S or N")]
    BadAnswer { addr: SocketAddr, byte: u8 },
    #[error("TLS handshake with server {addr} failed (SSLMode {mode}): {reason}")]
    Handshake {
        addr: SocketAddr,
        mode: &'static str,
        reason: String,
    },
    #[error(
        "host {host:?} cannot be checked against a certificate (SSLMode verify-full needs a DNS name or an IP address)"
    )]
    BadName { host: String },
    #[error("server {addr} closed the connection during the SSLRequest: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl TlsConnectError {
    /// A failed handshake, as opposed to a server that simply has no TLS.
    pub fn is_handshake(&self) -> bool {
        matches!(self, TlsConnectError::Handshake { .. })
    }
}

/// One effective server TLS policy: the mode and, unless disabled, a ready rustls config.
pub struct ServerTls {
    pub settings: ServerTlsSettings,
    connector: Option<TlsConnector>,
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Plaintext only: what tests and destinations without TLS use.
    pub fn disabled() -> Self {
        ServerTls {
            settings: ServerTlsSettings {
                ssl_mode: SslMode::Disable,
                root_cert_file: String::new(),
            },
            connector: None,
            config: None,
        }
    }

    /// Builds the policy, reading RootCertFile when one is given. `place` names the config
    /// section in errors (`ServerTLSSettings` or an override entry).
    pub fn build(s: &ServerTlsSettings, place: &str) -> Result<Self, ServerTlsError> {
        if s.ssl_mode == SslMode::Disable {
            return Ok(ServerTls {
                settings: s.clone(),
                connector: None,
                config: None,
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match s.root_cert_file.trim() {
            "" if s.ssl_mode.verifies() => {
                return Err(ServerTlsError::Config {
                    place: place.to_owned(),
                    reason: format!("SSLMode {} needs RootCertFile", s.ssl_mode.as_str()),
                });
            }
            "" => None,
            // libpq ignores the root file for disable/prefer; so do we.
            _ if s.ssl_mode == SslMode::Prefer => None,
            path => Some(load_roots(Path::new(path), place)?),
        };
        let config_err = |e: rustls::Error| ServerTlsError::Config {
            place: place.to_owned(),
            reason: e.to_string(),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?;
        let mut config = match (s.ssl_mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => {
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| ServerTlsError::Config {
                        place: place.to_owned(),
                        reason: e.to_string(),
                    })?;
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            }
            // require with a root file behaves as verify-ca, as libpq's does.
            (_, Some(roots)) => {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| ServerTlsError::Config {
                        place: place.to_owned(),
                        reason: e.to_string(),
                    })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                    .with_no_client_auth()
            }
            (_, None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        // PostgreSQL 17 checks ALPN when a client offers it; older servers ignore it.
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        let config = Arc::new(config);
        Ok(ServerTls {
            settings: s.clone(),
            connector: Some(TlsConnector::from(config.clone())),
            config: Some(config),
        })
    }

    /// The rustls configuration (None when TLS is disabled), for other PostgreSQL clients
    /// such as the auth-DB pool.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.config.clone()
    }

    pub fn mode(&self) -> SslMode {
        self.settings.ssl_mode
    }

    /// Sends SSLRequest on a fresh connection and, when the server agrees, does the handshake.
    /// A server that declines gets plaintext under `prefer`, an error otherwise.
    pub async fn secure(
        &self,
        mut tcp: TcpStream,
        host: &str,
        addr: SocketAddr,
    ) -> Result<ServerStream, TlsConnectError> {
        let Some(connector) = &self.connector else {
            return Ok(ServerStream::Plain(tcp));
        };
        let mode = self.mode().as_str();
        let io = |source| TlsConnectError::Io { addr, source };
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        // Exactly one byte: anything the server sends after it belongs to the TLS layer.
        let answer = tcp.read_u8().await.map_err(io)?;
        match answer {
            b'S' => {}
            b'N' if self.mode() == SslMode::Prefer => return Ok(ServerStream::Plain(tcp)),
            b'N' => return Err(TlsConnectError::Refused { addr, mode }),
            byte => return Err(TlsConnectError::BadAnswer { addr, byte }),
        }
        let name = self.server_name(host, addr)?;
        match connector.connect(name, tcp).await {
            Ok(tls) => Ok(ServerStream::Tls(Box::new(tls))),
            Err(e) => Err(TlsConnectError::Handshake {
                addr,
                mode,
                reason: e.to_string(),
            }),
        }
    }

    /// The name the certificate is checked against. Only verify-full looks at it; the other
    /// modes fall back to the peer's address when the host is not a valid name.
    fn server_name(
        &self,
        host: &str,
        addr: SocketAddr,
    ) -> Result<ServerName<'static>, TlsConnectError> {
        match ServerName::try_from(host.to_owned()) {
            Ok(name) => Ok(name),
            Err(_) if self.mode() != SslMode::VerifyFull => Ok(ServerName::from(addr.ip())),
            Err(_) => Err(TlsConnectError::BadName {
                host: host.to_owned(),
            }),
        }
    }
}

fn load_roots(path: &Path, place: &str) -> Result<Arc<RootCertStore>, ServerTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerTlsError::RootFile {
            place: place.to_owned(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ServerTlsError::NoRoots {
            place: place.to_owned(),
            path: path.display().to_string(),
        });
    }
    Ok(Arc::new(roots))
}

/// Every distinct server TLS policy a configuration can give a destination, built up front
/// so a broken RootCertFile is refused at start and on SIGHUP rather than at first use.
#[derive(Debug, Default)]
pub struct ServerTlsSet {
    policies: HashMap<ServerTlsSettings, Arc<ServerTls>>,
}

impl ServerTlsSet {
    pub fn from_config(cfg: &Config) -> Result<Self, ServerTlsError> {
        let mut policies = HashMap::new();
        let top = cfg.server_tls.clone();
        policies.insert(
            top.clone(),
            Arc::new(ServerTls::build(&top, "ServerTLSSettings")?),
        );
        for (name, o) in &cfg.overrides {
            let s = o.apply_tls(&top);
            if !policies.contains_key(&s) {
                let place = format!("OverrideSettings[{name:?}]");
                policies.insert(s.clone(), Arc::new(ServerTls::build(&s, &place)?));
            }
        }
        Ok(ServerTlsSet { policies })
    }

    /// The policy for the destination `dest_host/dest_db` under `cfg` (the config this set
    /// was built from).
    pub fn for_dest(
        &self,
        cfg: &Config,
        dest_host: &str,
        dest_db: &str,
    ) -> Result<Arc<ServerTls>, ServerTlsError> {
        let s = cfg.server_tls_for(dest_host, dest_db);
        match self.policies.get(&s) {
            Some(p) => Ok(p.clone()),
            // Only reachable if the set and the config disagree; build rather than guess.
            None => Ok(Arc::new(ServerTls::build(
                &s,
                &format!("OverrideSettings[\"{dest_host}/{dest_db}\"]"),
            )?)),
        }
    }
}

/// `require` without a root file: encryption only, as libpq. Handshake signatures are still
/// checked so the TLS session itself is sound.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// verify-ca: the full webpki check, except that the certificate need not name the host.
/// webpki checks the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
