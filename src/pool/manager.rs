//! The deadpool manager for raw server connections: create with a timeout, refuse to hand out
//! a connection that is broken, too old or idle too long.

use std::sync::{Arc, RwLock};

use deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};

use super::destination::Destination;
use super::server::{ServerConn, ServerError};
use super::stats::PoolStats;
use crate::config::PoolSettings;

pub struct ServerManager {
    pub dest: Destination,
    pub settings: Arc<RwLock<PoolSettings>>,
    pub stats: Arc<PoolStats>,
}

impl ServerManager {
    fn settings(&self) -> PoolSettings {
        self.settings.read().expect("pool settings lock").clone()
    }
}

impl Manager for ServerManager {
    type Type = ServerConn;
    type Error = ServerError;

    async fn create(&self) -> Result<ServerConn, ServerError> {
        let s = self.settings();
        let limit = s.conn_create_timeout;
        match tokio::time::timeout(limit, ServerConn::connect(&self.dest)).await {
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
        if !conn.idle_check() {
            return Err(RecycleError::message("connection broken while idle"));
        }
        Ok(())
    }
}
