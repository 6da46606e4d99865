//! The deadpool manager for raw server connections: create with a timeout, refuse to hand out
//! a connection that is broken, too old or idle too long.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};

use super::destination::Destination;
use super::server::{ServerConn, ServerError};
use super::stats::PoolStats;
use super::tls::ServerTls;
use crate::config::PoolSettings;

pub struct ServerManager {
    pub dest: Destination,
    pub settings: Arc<RwLock<PoolSettings>>,
    pub stats: Arc<PoolStats>,
    /// The server TLS policy and when its settings last changed: connections made before
    /// that were made under another policy and are not reused.
    pub tls: RwLock<(Arc<ServerTls>, Instant)>,
}

impl ServerManager {
    fn settings(&self) -> PoolSettings {
        self.settings.read().expect("pool settings lock").clone()
    }

    fn tls(&self) -> (Arc<ServerTls>, Instant) {
        self.tls.read().expect("pool tls lock").clone()
    }

    /// Connects under the current TLS policy. A reload that changes the policy meanwhile would
    /// leave a connection made under the old one looking new, so that one is redone.
    async fn connect_under_current_tls(&self) -> Result<ServerConn, ServerError> {
        let (tls, since) = self.tls();
        let conn = ServerConn::connect(&self.dest, &tls).await?;
        if self.tls().1 == since {
            return Ok(conn);
        }
        drop(conn);
        let (tls, _) = self.tls();
        ServerConn::connect(&self.dest, &tls).await
    }

    /// Installs a reloaded policy; a change of settings retires connections made under the old.
    pub fn set_tls(&self, tls: Arc<ServerTls>) -> bool {
        let mut slot = self.tls.write().expect("pool tls lock");
        let changed = slot.0.settings != tls.settings;
        let since = if changed { Instant::now() } else { slot.1 };
        *slot = (tls, since);
        changed
    }
}

impl Manager for ServerManager {
    type Type = ServerConn;
    type Error = ServerError;

    async fn create(&self) -> Result<ServerConn, ServerError> {
        let s = self.settings();
        let limit = s.conn_create_timeout;
        match tokio::time::timeout(limit, self.connect_under_current_tls()).await {
            Ok(Ok(mut conn)) => {
                conn.prepared =
                    super::prepared::PreparedSet::new(s.max_prepared_statements as usize);
                Ok(conn)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ServerError::ConnectTimeout(limit)),
        }
    }

    async fn recycle(
        &self,
        conn: &mut ServerConn,
        metrics: &Metrics,
    ) -> RecycleResult<ServerError> {
        let s = self.settings();
        if metrics.age() >= s.max_lifetime {
            self.stats.note_lifetime_closed();
            return Err(RecycleError::message("max lifetime reached"));
        }
        if metrics.last_used() >= s.max_idle_time {
            self.stats.note_idle_time_closed();
            return Err(RecycleError::message("max idle time reached"));
        }
        if metrics.created < self.tls().1 {
            return Err(RecycleError::message("server TLS settings changed"));
        }
        if !conn.idle_check() {
            return Err(RecycleError::message("connection broken while idle"));
        }
        Ok(())
    }
}
