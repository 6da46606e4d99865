//! Network plumbing: listening sockets and TCP options, the client TLS acceptor and its
//! reloadable holder.

pub mod auth_db_tls;
pub mod listener;
pub mod tcp;
pub mod tls;

use std::sync::RwLock;

use tokio_rustls::TlsAcceptor;

use crate::config::{TlsMode, TlsSettings};

/// The current TLS policy and acceptor; SIGHUP swaps in new certificates.
pub struct ClientTls {
    inner: RwLock<(TlsMode, Option<TlsAcceptor>)>,
}

impl ClientTls {
    /// Builds from settings; with TLS off no files are read.
    pub fn new(s: &TlsSettings) -> Result<Self, tls::TlsError> {
        Ok(ClientTls {
            inner: RwLock::new(Self::build(s)?),
        })
    }

    fn build(s: &TlsSettings) -> Result<(TlsMode, Option<TlsAcceptor>), tls::TlsError> {
        match s.mode {
            TlsMode::Disable => Ok((TlsMode::Disable, None)),
            mode => Ok((
                mode,
                Some(tls::load_acceptor(
                    std::path::Path::new(&s.cert_file),
                    std::path::Path::new(&s.key_file),
                )?),
            )),
        }
    }

    /// Re-reads the certificate files; on error the old ones stay in use.
    pub fn reload(&self, s: &TlsSettings) -> Result<(), tls::TlsError> {
        let new = Self::build(s)?;
        *self.inner.write().expect("tls lock") = new;
        Ok(())
    }

    pub fn current(&self) -> (TlsMode, Option<TlsAcceptor>) {
        self.inner.read().expect("tls lock").clone()
    }
}
