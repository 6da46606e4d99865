//! Opens server connections for one destination under its current server TLS policy, and
//! numbers the policies so connections made under an older one can be told apart and retired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::destination::Destination;
use super::server::{ServerConn, ServerError};
use super::tls::ServerTls;
use crate::net::tcp::TcpOptions;

pub struct Opener {
    dest: Destination,
    tcp: TcpOptions,
    tls: RwLock<Arc<ServerTls>>,
    /// Bumped, under the write lock, whenever the policy's settings change.
    generation: AtomicU64,
}

impl Opener {
    pub fn new(dest: Destination, tls: Arc<ServerTls>, tcp: TcpOptions) -> Self {
        Opener {
            dest,
            tcp,
            tls: RwLock::new(tls),
            generation: AtomicU64::new(0),
        }
    }

    pub fn password(&self) -> &str {
        &self.dest.password
    }

    /// The current policy's number; a connection made under another is not reused.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn policy(&self) -> (Arc<ServerTls>, u64) {
        let tls = self.tls.read().unwrap_or_else(PoisonError::into_inner);
        (tls.clone(), self.generation())
    }

    /// Connects, authenticates and returns the connection with its policy generation, all
    /// within `limit` (ConnCreateTimeoutSecs).
    pub async fn connect(&self, limit: Duration) -> Result<(ServerConn, u64), ServerError> {
        tokio::time::timeout(limit, self.connect_under_current_tls())
            .await
            .unwrap_or(Err(ServerError::ConnectTimeout(limit)))
    }

    /// A reload that changes the policy meanwhile would leave a connection made under the old
    /// one looking current, so that one is redone.
    async fn connect_under_current_tls(&self) -> Result<(ServerConn, u64), ServerError> {
        let (tls, generation) = self.policy();
        let conn = ServerConn::connect(&self.dest, &tls, &self.tcp).await?;
        if self.generation() == generation {
            return Ok((conn, generation));
        }
        drop(conn);
        let (tls, generation) = self.policy();
        Ok((
            ServerConn::connect(&self.dest, &tls, &self.tcp).await?,
            generation,
        ))
    }

    /// Installs a reloaded policy; returns whether its settings changed (a new generation).
    pub fn set_tls(&self, tls: Arc<ServerTls>) -> bool {
        let mut slot = self.tls.write().unwrap_or_else(PoisonError::into_inner);
        let changed = slot.settings != tls.settings;
        *slot = tls;
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }
}
