//! One physical pool per destination, shared by every tenant routed there: checkout with a wait
//! bound, release that keeps at most MaxIdle idle, reaping by idle time and lifetime.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use deadpool::Runtime;
use deadpool::managed::{Object, Pool, PoolError, QueueMode, TimeoutType, Timeouts};

use super::destination::{DestKey, Destination};
use super::gate::{Gate, GateError, Pass};
use super::manager::ServerManager;
use super::server::{ServerConn, ServerError};
use super::stats::PoolStats;
use super::tls::ServerTls;
use crate::config::PoolSettings;

/// A checked-out server connection and its MaxOpen slot; dropping it returns both.
pub struct PooledConn {
    obj: Option<Object<ServerManager>>,
    pass: Option<Pass>,
}

impl std::ops::Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.obj
            .as_ref()
            .expect("a pooled connection holds its object until dropped")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.obj
            .as_mut()
            .expect("a pooled connection holds its object until dropped")
    }
}

impl PooledConn {
    /// Closes the connection instead of pooling it; the slot is freed on drop.
    fn close(mut self) {
        if let Some(obj) = self.obj.take() {
            drop(Object::take(obj));
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let obj = self.obj.take();
        match self.pass.take() {
            Some(pass) => pass.leave(|keep| match obj {
                Some(obj) if !keep => drop(Object::take(obj)),
                other => drop(other),
            }),
            None => drop(obj),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("timed out after {waited:?} waiting for a server connection in pool {pool}")]
    WaitTimeout { pool: String, waited: Duration },
    #[error("cannot open a server connection for pool {pool}: {source}")]
    Server { pool: String, source: ServerError },
    #[error("pool {0} is closed")]
    Closed(String),
}

pub struct DestPool {
    pub key: DestKey,
    /// `dest_host` and `dest_db` as the Go daemon labels its metrics.
    pub labels: (String, String),
    /// deadpool only ever grows (see `gate.rs`); `gate` holds the current MaxOpen.
    pool: Pool<ServerManager>,
    gate: Arc<Gate>,
    settings: Arc<RwLock<PoolSettings>>,
    pub stats: Arc<PoolStats>,
    /// The ParameterStatus set of the first server connection, replayed to new clients.
    startup_params: Mutex<Vec<(String, String)>>,
    /// Ciphertexts known to decrypt to this pool's password. KMS ciphertexts are randomised,
    /// so every tenant row routed here carries a different one.
    ciphertexts: Mutex<std::collections::HashSet<String>>,
}

impl DestPool {
    pub fn new(
        key: DestKey,
        password: String,
        ciphertext: String,
        settings: PoolSettings,
        tls: Arc<ServerTls>,
    ) -> Arc<Self> {
        let stats = Arc::new(PoolStats::default());
        let max = settings.max_open.max(1) as usize;
        let settings = Arc::new(RwLock::new(settings));
        let manager = ServerManager {
            dest: Destination {
                host: key.host.clone(),
                port: key.port,
                db: key.db.clone(),
                user: key.user.clone(),
                password,
            },
            settings: settings.clone(),
            stats: stats.clone(),
            tls: RwLock::new((tls, Instant::now())),
        };
        let pool = Pool::builder(manager)
            .max_size(max)
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .build()
            .expect("a runtime is set, so building the pool cannot fail");
        Arc::new(DestPool {
            labels: (key.dest_host_label(), key.db.clone()),
            key,
            pool,
            gate: Gate::new(max),
            settings,
            stats,
            startup_params: Mutex::new(Vec::new()),
            ciphertexts: Mutex::new([ciphertext].into()),
        })
    }

    pub fn knows_ciphertext(&self, ciphertext: &str) -> bool {
        self.ciphertexts
            .lock()
            .expect("ciphertexts")
            .contains(ciphertext)
    }

    /// Accepts another ciphertext if it decrypts to the password this pool already uses.
    pub fn adopt_ciphertext(&self, ciphertext: &str, password: &str) -> bool {
        if self.pool.manager().dest.password != password {
            return false;
        }
        self.ciphertexts
            .lock()
            .expect("ciphertexts")
            .insert(ciphertext.to_owned());
        true
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings.read().expect("pool settings lock").clone()
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.labels.0, self.labels.1)
    }

    /// deadpool's counts with the limit and the waiters of the MaxOpen gate.
    pub fn status(&self) -> deadpool::Status {
        let mut s = self.pool.status();
        s.max_size = self.gate.max();
        s.waiting += self.gate.waiting();
        s
    }

    /// Hands out a healthy connection, waiting at most WaitTimeoutSecs.
    pub async fn checkout(&self) -> Result<PooledConn, CheckoutError> {
        let s = self.settings();
        let contended = self.gate.available() == 0;
        let started = Instant::now();
        let pass = match self.gate.enter(s.wait_timeout).await {
            Ok(p) => p,
            Err(e) => {
                self.stats
                    .checkout_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if contended {
                    self.stats.note_wait(started.elapsed());
                }
                return Err(match e {
                    GateError::Timeout => CheckoutError::WaitTimeout {
                        pool: self.name(),
                        waited: started.elapsed(),
                    },
                    GateError::Closed => CheckoutError::Closed(self.name()),
                });
            }
        };
        // The slot is ours, so deadpool (never smaller than the gate) answers without waiting
        // for anyone else; the bound is only a guard.
        let timeouts = Timeouts {
            wait: Some(
                s.wait_timeout
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1)),
            ),
            create: Some(s.conn_create_timeout),
            recycle: None,
        };
        let res = self.pool.timeout_get(&timeouts).await;
        if contended {
            self.stats.note_wait(started.elapsed());
        }
        let conn = res.map_err(|e| {
            self.stats
                .checkout_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match e {
                PoolError::Timeout(TimeoutType::Create) => CheckoutError::Server {
                    pool: self.name(),
                    source: ServerError::ConnectTimeout(s.conn_create_timeout),
                },
                PoolError::Timeout(_) => CheckoutError::WaitTimeout {
                    pool: self.name(),
                    waited: started.elapsed(),
                },
                PoolError::Backend(source) => CheckoutError::Server {
                    pool: self.name(),
                    source,
                },
                other => {
                    tracing::warn!(error = ?other, "checkout failed");
                    CheckoutError::Closed(self.name())
                }
            }
        })?;
        self.stats
            .checkouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.remember_params(&conn);
        Ok(PooledConn {
            obj: Some(conn),
            pass: Some(pass),
        })
    }

    fn remember_params(&self, conn: &ServerConn) {
        let mut p = self.startup_params.lock().expect("params lock");
        if p.is_empty() {
            *p = conn
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            p.sort();
        }
    }

    /// What a new client is told in ParameterStatus, as the destination server said it.
    pub fn startup_params(&self) -> Vec<(String, String)> {
        self.startup_params.lock().expect("params lock").clone()
    }

    /// Returns a connection. Anything not known clean is closed instead of pooled.
    pub fn release(&self, conn: PooledConn, reusable: bool) {
        if !reusable || conn.broken || conn.prepared.is_stale() {
            conn.close();
            return;
        }
        let max_idle = self.settings.read().expect("pool settings lock").max_idle as usize;
        if self.pool.status().available >= max_idle {
            self.stats
                .max_idle_closed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            conn.close();
            return;
        }
        drop(conn);
    }

    /// Closes a connection that may be in the middle of a statement. A backend busy in a
    /// query notices that its client left only when the query ends, keeping its transaction
    /// and locks until then; a CancelRequest (bounded by ConnCloseTimeoutSecs) stops it now.
    pub async fn discard(&self, conn: PooledConn) {
        let (addr, pid, secret) = (conn.addr, conn.backend_pid, conn.backend_secret);
        conn.close();
        let limit = self.settings().conn_close_timeout;
        let sent = tokio::time::timeout(limit, send_cancel(addr, pid, secret)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(pool = %self.name(), pid, "could not cancel a discarded server connection");
        }
    }

    /// Closes idle connections past their idle time or lifetime, and any beyond MaxIdle.
    pub fn reap(&self) {
        self.reap_keeping(self.settings().max_idle as usize);
    }

    /// [`DestPool::reap`] keeping at most `keep` idle connections.
    fn reap_keeping(&self, mut keep: usize) {
        let s = self.settings();
        let stats = &self.stats;
        self.pool.retain(|_, m| {
            if m.age() >= s.max_lifetime {
                stats.note_lifetime_closed();
                false
            } else if m.last_used() >= s.max_idle_time {
                stats.note_idle_time_closed();
                false
            } else if keep == 0 {
                stats
                    .max_idle_closed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            } else {
                keep -= 1;
                true
            }
        });
    }

    /// Applies reloaded settings: resizing never interrupts a connection in use.
    pub fn apply_settings(&self, s: PoolSettings) {
        let max = s.max_open.max(1) as usize;
        let max_idle = s.max_idle as usize;
        *self.settings.write().expect("pool settings lock") = s;
        if max > self.pool.status().max_size {
            self.pool.resize(max);
        }
        self.gate.resize(max);
        // Idle connections may fill only the slots the new limit leaves free; busy ones over
        // it are closed as they come back (the gate's debt).
        self.reap_keeping(max_idle.min(self.gate.available()));
    }

    /// Installs a reloaded server TLS policy. When its settings differ, idle connections made
    /// under the old one are closed now and busy ones are not reused; returns whether they did.
    pub fn set_tls(&self, tls: Arc<ServerTls>) -> bool {
        let changed = self.pool.manager().set_tls(tls);
        if changed {
            self.pool.retain(|_, _| false);
        }
        changed
    }

    pub fn close(&self) {
        self.gate.close();
        self.pool.close();
    }
}

/// A CancelRequest for backend `pid` on its own connection (the server answers by closing it).
async fn send_cancel(addr: std::net::SocketAddr, pid: i32, secret: i32) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, secret, &mut buf);
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(&buf).await
}
