//! One physical pool per destination, shared by every tenant routed there: checkout that
//! prefers a connection already on the tenant's schema, with a wait bound; release that hands a
//! connection straight to a waiting checkout or keeps at most MaxIdle idle; reaping by idle time
//! and lifetime; reloads that never fail a transaction in flight.

use crate::net::tcp::TcpOptions;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::HashSet;

use super::destination::{DestKey, Destination};
use super::live_settings::LiveSettings;
use super::opener::Opener;
use super::prepared::PreparedSet;
use super::server::{FittedSettings, ServerConn, ServerError};
use super::settings_memo::SettingsMemo;
use super::slots::{Affine, Got, PoolStatus, Reservation, Slots, Take, WaitError};
use super::stats::PoolStats;
use super::tls::ServerTls;
use crate::config::PoolSettings;

/// A server connection with what the pool needs to know to retire it. Boxed, so handing it
/// around moves a pointer, not the connection.
struct Tracked {
    conn: ServerConn,
    created: Instant,
    /// When it was last given back.
    idle_since: Instant,
    /// The server TLS policy it was made under (see [`Opener::generation`]).
    tls_generation: u64,
    /// The share of MaxLifetime it lives, drawn when it is opened (see [`lifetime_share`]).
    lifetime_share: f64,
}

impl Tracked {
    /// Whether it has lived its share of `max_lifetime` (0 = no limit) at `now`.
    fn lifetime_over(&self, max_lifetime: Duration, now: Instant) -> bool {
        past(
            now.duration_since(self.created),
            max_lifetime.mul_f64(self.lifetime_share),
        )
    }
}

/// A new connection's share of MaxLifetime, from 0.9 to 1: connections opened together (a
/// start under load) then retire over a tenth of the lifetime instead of all at once, and
/// none outlives the limit, which may stand for a credential's or a certificate's validity.
fn lifetime_share() -> f64 {
    rand::random_range(0.9..=1.0)
}

impl Affine for Tracked {
    fn schema(&self) -> Option<&str> {
        self.conn.schema.as_deref()
    }
}

/// Whether `elapsed` reached `limit`, where 0 means no limit, as in the Go pool.
fn past(elapsed: Duration, limit: Duration) -> bool {
    !limit.is_zero() && elapsed >= limit
}

/// What the pool and the connections it lent out share.
struct Home {
    slots: Slots<Tracked>,
    /// Started with the first checkout that has to wait (see [`Slots::watch`]).
    watchdog: std::sync::Once,
    settings: LiveSettings,
    opener: Opener,
    stats: Arc<PoolStats>,
}

impl Home {
    fn settings(&self) -> PoolSettings {
        self.settings.load()
    }

    /// Whether an idle connection is past MaxLifetime or MaxIdletime at `now`; counted as
    /// closed for that reason when it is (the caller closes it).
    fn retired(&self, t: &Tracked, s: &PoolSettings, now: Instant) -> bool {
        if t.lifetime_over(s.max_lifetime, now) {
            self.stats.note_lifetime_closed();
            true
        } else if past(now.duration_since(t.idle_since), s.max_idle_time) {
            self.stats.note_idle_time_closed();
            true
        } else {
            false
        }
    }

    /// A pooled connection about to be handed out, if still fit; closed otherwise.
    fn vet_idle(&self, t: Box<Tracked>, s: &PoolSettings) -> Option<Box<Tracked>> {
        if self.retired(&t, s, Instant::now()) {
            self.slots.discard(t);
            return None;
        }
        self.vet_handed(t)
    }

    /// [`Home::vet_idle`] for a connection handed straight from its last user to a waiting
    /// checkout: its age was checked on release a moment ago, so only the socket and the TLS
    /// policy are, saving a clock read on the checkout that most often waits.
    fn vet_handed(&self, mut t: Box<Tracked>) -> Option<Box<Tracked>> {
        if t.tls_generation == self.opener.generation() && t.conn.idle_check() {
            return Some(t);
        }
        self.slots.discard(t);
        None
    }

    /// Takes a connection back. Anything not known clean, made under an older TLS policy or
    /// past its lifetime is closed instead of pooled.
    fn put_back(&self, mut t: Box<Tracked>, reusable: bool) {
        let c = &t.conn;
        if !reusable
            || c.broken
            || c.prepared.is_stale()
            || t.tls_generation != self.opener.generation()
        {
            self.slots.discard(t);
            return;
        }
        let now = Instant::now();
        if t.lifetime_over(self.settings.max_lifetime(), now) {
            self.stats.note_lifetime_closed();
            self.slots.discard(t);
            return;
        }
        t.idle_since = now;
        self.slots.give_back(t);
    }
}

/// A checked-out server connection; dropping it gives it back to the pool.
pub struct PooledConn {
    t: Option<Box<Tracked>>,
    home: Arc<Home>,
}

impl std::ops::Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        &self
            .t
            .as_ref()
            .expect("a pooled connection holds its connection until dropped")
            .conn
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        &mut self
            .t
            .as_mut()
            .expect("a pooled connection holds its connection until dropped")
            .conn
    }
}

impl PooledConn {
    /// The connection, leaving nothing for drop to give back.
    fn into_tracked(mut self) -> Option<Box<Tracked>> {
        self.t.take()
    }
}

impl Drop for PooledConn {
    /// A connection nobody released (its session's task was dropped or panicked) may be in the
    /// middle of a transaction: it is closed, never handed to the next client.
    fn drop(&mut self) {
        if let Some(t) = self.t.take() {
            self.home.put_back(t, false);
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
    /// `dest_host/dest_db`: made once, since every client's listing shares it.
    name: Arc<str>,
    home: Arc<Home>,
    pub stats: Arc<PoolStats>,
    /// The ParameterStatus set of the first server connection, replayed to new clients.
    startup_params: std::sync::OnceLock<Vec<(String, String)>>,
    /// What the pool remembers of its clients' settings, to share work between logins.
    memo: SettingsMemo,
    /// Ciphertexts known to decrypt to this pool's password. KMS ciphertexts are randomised,
    /// so every tenant row routed here carries a different one.
    ciphertexts: Mutex<HashSet<String>>,
}

impl DestPool {
    pub fn new(
        key: DestKey,
        password: String,
        ciphertext: String,
        settings: PoolSettings,
        tls: Arc<ServerTls>,
        tcp: TcpOptions,
    ) -> Arc<Self> {
        let stats = Arc::new(PoolStats::default());
        let dest = Destination {
            host: key.host.clone(),
            port: key.port,
            db: key.db.clone(),
            user: key.user.clone(),
            password,
        };
        let home = Arc::new(Home {
            slots: Slots::new(
                settings.max_open as usize,
                settings.max_idle as usize,
                stats.clone(),
            ),
            watchdog: std::sync::Once::new(),
            settings: LiveSettings::new(&settings),
            opener: Opener::new(dest, tls, tcp),
            stats: stats.clone(),
        });
        let labels = (key.dest_host_label(), key.db.clone());
        Arc::new(DestPool {
            name: format!("{}/{}", labels.0, labels.1).into(),
            labels,
            key,
            home,
            stats,
            startup_params: std::sync::OnceLock::new(),
            memo: SettingsMemo::default(),
            ciphertexts: Mutex::new(HashSet::from_iter([ciphertext])),
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
        if self.home.opener.password() != password {
            return false;
        }
        self.ciphertexts
            .lock()
            .expect("ciphertexts")
            .insert(ciphertext.to_owned());
        true
    }

    pub fn settings(&self) -> PoolSettings {
        self.home.settings()
    }

    /// `dest_host/dest_db`, shared.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn status(&self) -> PoolStatus {
        self.home.slots.status()
    }

    /// Hands out a healthy connection, preferring one already on `schema`, waiting at most
    /// WaitTimeoutSecs when all MaxOpen are in use. Also returns how long the caller waited
    /// for it: queued, then opening a new connection if it had to.
    pub async fn checkout(
        &self,
        schema: &Arc<str>,
    ) -> (Result<PooledConn, CheckoutError>, Duration) {
        let (mut waited, mut opening) = (None, Duration::ZERO);
        let res = self.acquire(schema, &mut waited, &mut opening).await;
        if let Some(waited) = waited {
            self.stats.note_wait(waited);
        }
        match &res {
            Ok(c) => self.note_checkout(c, schema),
            Err(_) => {
                self.stats.checkout_errors.fetch_add(1, Relaxed);
            }
        }
        (res, waited.unwrap_or_default() + opening)
    }

    /// [`DestPool::checkout`] when an idle connection is fit for use now: no future, no wait.
    /// Sessions try this first, so the common checkout costs a lock and nothing else.
    pub fn checkout_now(&self, schema: &str) -> Option<PooledConn> {
        let home = &self.home;
        let s = home.settings();
        // Each unfit connection is closed before the next try, so the idle list runs out.
        while let Some(t) = home.slots.take_idle(schema) {
            if let Some(t) = home.vet_idle(t, &s) {
                let c = self.lend(t);
                self.note_checkout(&c, schema);
                return Some(c);
            }
        }
        None
    }

    fn note_checkout(&self, c: &PooledConn, schema: &str) {
        self.stats.checkouts.fetch_add(1, Relaxed);
        if c.schema.as_deref() == Some(schema) {
            self.stats.affinity_hits.fetch_add(1, Relaxed);
        }
    }

    /// [`DestPool::checkout`], setting `waited` to the time spent queued if it had to queue
    /// and `opening` to the time spent opening a connection if it had to open one.
    async fn acquire(
        &self,
        schema: &Arc<str>,
        waited: &mut Option<Duration>,
        opening: &mut Duration,
    ) -> Result<PooledConn, CheckoutError> {
        let home = &self.home;
        let s = home.settings();
        // Each unfit connection is closed before the next try, so this ends when the idle list
        // runs out; the bound only guards against connections failing as fast as they come back.
        for _ in 0..=s.max_open as usize * 2 {
            let so_far = waited.unwrap_or_default();
            let take = home
                .slots
                .take(schema, s.wait_timeout.saturating_sub(so_far))
                .map_err(|_| CheckoutError::Closed(self.name().to_string()))?;
            let t = match take {
                Take::Idle(t) => t,
                Take::Open(slot) => return self.open_timed(slot, &s, opening).await,
                Take::Wait(waiting) => {
                    self.watch();
                    let since = waiting.since;
                    let got = waiting.wait().await;
                    let total = so_far + since.elapsed();
                    *waited = Some(total);
                    match got {
                        // A connection handed over on release is vetted too: its socket may
                        // have turned unusable, or received bytes nobody asked for, since its
                        // last reply.
                        Ok(Got::Conn(t)) => match home.vet_handed(t) {
                            Some(t) => return Ok(self.lend(t)),
                            None => continue,
                        },
                        Ok(Got::Open(slot)) => return self.open_timed(slot, &s, opening).await,
                        Err(WaitError::Timeout) => {
                            return Err(CheckoutError::WaitTimeout {
                                pool: self.name().to_string(),
                                waited: total,
                            });
                        }
                        Err(WaitError::Closed) => {
                            return Err(CheckoutError::Closed(self.name().to_string()));
                        }
                    }
                }
            };
            if let Some(t) = home.vet_idle(t, &s) {
                return Ok(self.lend(t));
            }
        }
        Err(CheckoutError::Server {
            pool: self.name().to_string(),
            source: ServerError::Io(std::io::Error::other(
                "idle server connections keep failing their health check",
            )),
        })
    }

    /// Starts the pool's watchdog, once. It holds the pool's core until the pool is closed,
    /// which dropping the [`DestPool`] does.
    fn watch(&self) {
        self.home.watchdog.call_once(|| {
            let home = self.home.clone();
            tokio::spawn(async move { home.slots.watch().await });
        });
    }

    /// [`DestPool::open`], setting `took` to how long it took. Boxed here, on the rare path, so
    /// that a waiting checkout (nearly every one when clients outnumber connections) is small
    /// enough to live in its client's task instead of an allocation of its own.
    async fn open_timed(
        &self,
        slot: Reservation<'_, Tracked>,
        s: &PoolSettings,
        took: &mut Duration,
    ) -> Result<PooledConn, CheckoutError> {
        let started = Instant::now();
        let res = Box::pin(self.open(slot, s)).await;
        *took = started.elapsed();
        res
    }

    /// Opens a connection in a reserved slot; the slot is freed if that fails or the checkout
    /// is dropped meanwhile.
    async fn open(
        &self,
        slot: Reservation<'_, Tracked>,
        s: &PoolSettings,
    ) -> Result<PooledConn, CheckoutError> {
        let (mut conn, tls_generation) = self
            .home
            .opener
            .connect(s.conn_create_timeout)
            .await
            .map_err(|source| CheckoutError::Server {
                pool: self.name().to_string(),
                source,
            })?;
        conn.prepared = PreparedSet::new(s.max_prepared_statements as usize);
        self.remember_params(&conn);
        let now = Instant::now();
        slot.fill();
        Ok(self.lend(Box::new(Tracked {
            conn,
            created: now,
            idle_since: now,
            tls_generation,
            lifetime_share: lifetime_share(),
        })))
    }

    fn lend(&self, t: Box<Tracked>) -> PooledConn {
        PooledConn {
            t: Some(t),
            home: self.home.clone(),
        }
    }

    fn remember_params(&self, conn: &ServerConn) {
        if self.startup_params.get().is_some() {
            return;
        }
        let mut p: Vec<(String, String)> = conn
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        p.sort();
        // Another first connection may have won the race: either list is as good.
        let _ = self.startup_params.set(p);
    }

    /// The shared map equal to `wanted` (see [`SettingsMemo::intern`]).
    pub fn intern_settings(&self, wanted: &FittedSettings) -> FittedSettings {
        self.memo.intern(wanted)
    }

    /// See [`SettingsMemo::asked`].
    pub fn settings_asked(&self, asked: &BTreeMap<String, String>) -> Option<FittedSettings> {
        self.memo.asked(asked)
    }

    /// See [`SettingsMemo::remember_asked`].
    pub fn remember_asked(&self, asked: BTreeMap<String, String>, map: FittedSettings) {
        self.memo.remember_asked(asked, map)
    }

    /// The ParameterStatus block a client with the shared settings map `wanted` is welcomed
    /// with (see [`SettingsMemo::welcome`]).
    pub fn welcome(&self, wanted: &FittedSettings) -> bytes::Bytes {
        self.memo.welcome(wanted, self.startup_params())
    }

    /// What a new client is told in ParameterStatus, as the destination server said it;
    /// empty until the pool's first connection. Borrowed: every login reads it.
    pub fn startup_params(&self) -> &[(String, String)] {
        self.startup_params.get().map_or(&[], Vec::as_slice)
    }

    /// Returns a connection: to a waiting checkout, else idle. Anything not known clean is
    /// closed instead of pooled.
    pub fn release(&self, conn: PooledConn, reusable: bool) {
        if let Some(t) = conn.into_tracked() {
            self.home.put_back(t, reusable);
        }
    }

    /// Closes a connection that may be in the middle of a statement. A backend busy in a
    /// query notices that its client left only when the query ends, keeping its transaction
    /// and locks until then; a CancelRequest (bounded by ConnCloseTimeoutSecs) stops it now.
    pub async fn discard(&self, conn: PooledConn) {
        let (addr, pid, secret) = (conn.addr, conn.backend_pid, conn.backend_secret);
        if let Some(t) = conn.into_tracked() {
            self.home.slots.discard(t);
        }
        let limit = self.settings().conn_close_timeout;
        let sent = tokio::time::timeout(limit, send_cancel(addr, pid, secret)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(pool = %self.name(), pid, "could not cancel a discarded server connection");
        }
    }

    /// Closes idle connections past their idle time or lifetime, and any beyond MaxIdle.
    pub fn reap(&self) {
        let s = self.settings();
        let now = Instant::now();
        let home = &self.home;
        home.slots.prune(|t| !home.retired(t, &s, now));
    }

    /// Applies reloaded settings: resizing never interrupts a connection in use.
    pub fn apply_settings(&self, s: PoolSettings) {
        let (max_open, max_idle) = (s.max_open as usize, s.max_idle as usize);
        self.home.settings.store(&s);
        self.home.slots.resize(max_open, max_idle);
        self.reap();
    }

    /// Installs a reloaded server TLS policy. When its settings differ, idle connections made
    /// under the old one are closed now and busy ones are not reused; returns whether they did.
    pub fn set_tls(&self, tls: Arc<ServerTls>) -> bool {
        let changed = self.home.opener.set_tls(tls);
        if changed {
            let current = self.home.opener.generation();
            self.home.slots.prune(|t| t.tls_generation == current);
        }
        changed
    }

    pub fn close(&self) {
        self.home.slots.close();
    }
}

impl Drop for DestPool {
    /// Nothing can check out of a dropped pool; closing it also ends its watchdog, which
    /// would otherwise keep the pool's core (and its idle connections) alive.
    fn drop(&mut self) {
        self.close();
    }
}

/// Adds `item` to a short list of remembered settings maps, forgetting the oldest once 16 are
/// kept: clients of one pool rarely ask for more distinct settings than that.
/// A CancelRequest for backend `pid` on its own connection (the server answers by closing it).
async fn send_cancel(addr: std::net::SocketAddr, pid: i32, secret: i32) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, secret, &mut buf);
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(&buf).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_over_the_last_tenth_and_never_past_the_limit() {
        let shares: Vec<f64> = (0..1000).map(|_| lifetime_share()).collect();
        assert!(shares.iter().all(|s| (0.9..=1.0).contains(s)), "{shares:?}");
        let (lo, hi) = shares
            .iter()
            .fold((1.0f64, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        assert!(
            hi - lo > 0.05,
            "1,000 draws spread over the tenth: {lo}..{hi}"
        );
        let max = Duration::from_secs(3600);
        assert!(shares.iter().all(|&s| max.mul_f64(s) <= max));
        // No limit stays no limit, whatever the share.
        assert!(!past(
            Duration::from_secs(1 << 40),
            Duration::ZERO.mul_f64(0.95)
        ));
    }
}
