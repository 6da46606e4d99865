//! Connected clients as operators see them (SHOW CLIENTS, SHOW TENANTS), and the per-tenant
//! controls the admin console drives: PAUSE/RESUME gates and KILL.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use futures::task::AtomicWaker;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::proto::backend;

/// A tenant as clients name it: (database, schema).
pub type TenantKey = (String, String);

/// What a client is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between transactions, holding no server connection.
    Idle,
    /// Has sent a message and waits for a paused tenant to resume or for a server connection.
    Waiting,
    /// Holds a server connection.
    Active,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Waiting => "waiting",
            Phase::Active => "active",
        }
    }
}

/// One logged-in client, shared between its session and the admin console.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub peer: SocketAddr,
    pub db: Arc<str>,
    pub schema: Arc<str>,
    pub user: Arc<str>,
    /// The destination pool (`dest_host/dest_db`) the tenant is routed to.
    pub pool: Arc<str>,
    pub connected_at: SystemTime,
    phase: AtomicU8,
    pinned: Mutex<Option<&'static str>>,
    /// When the client last went quiet between transactions, in milliseconds of the
    /// registry's clock, shifted left by one; the low bit says its buffers were released
    /// since. Read by [`ClientRegistry::sweep`].
    quiet_since: AtomicU64,
    /// Raised [`signal`] bits; the session task is woken through `waker`.
    signals: AtomicU8,
    waker: AtomicWaker,
}

/// What ends a session from outside, as bits of [`ClientEntry::signaled`]. A session polls
/// them every time it waits, so they cost one atomic load there instead of a lock on a shared
/// notifier (which every session's wait on the daemon-wide tokens took).
pub mod signal {
    /// An operator KILLed the client's tenant.
    pub const KILLED: u8 = 1;
    /// The daemon is stopping: no new transaction starts.
    pub const SHUTDOWN: u8 = 2;
    /// The shutdown grace period is over: transactions in flight are cut off.
    pub const HARD_STOP: u8 = 4;
    /// The client may have been quiet past an idle limit: the session looks at its own clock
    /// and clears this.
    pub const TICK: u8 = 8;
    /// The client cancelled the request it has queued for a server connection (see
    /// `CancelCell::queue`); the session clears this.
    pub const CANCEL: u8 = 16;
}

/// How long a client waits between transactions before its buffers are released.
pub const IDLE_SHRINK: Duration = Duration::from_secs(1);

impl ClientEntry {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Waiting,
            2 => Phase::Active,
            _ => Phase::Idle,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        let v = match p {
            Phase::Idle => 0,
            Phase::Waiting => 1,
            Phase::Active => 2,
        };
        self.phase.store(v, Ordering::Relaxed);
    }

    /// Why the client is pinned to its server connection, if it is.
    pub fn pinned(&self) -> Option<&'static str> {
        *self.pinned.lock().expect("client pinned lock")
    }

    pub fn set_pinned(&self, why: Option<&'static str>) {
        *self.pinned.lock().expect("client pinned lock") = why;
    }

    /// Resolves, with the bits raised, once any [`signal`] in `mask` is raised. Only the
    /// client's own session task may wait on it (one waker is kept).
    pub fn signaled(&self, mask: u8) -> impl Future<Output = u8> + '_ {
        std::future::poll_fn(move |cx| {
            let raised = self.signals.load(Ordering::Acquire) & mask;
            if raised != 0 {
                return Poll::Ready(raised);
            }
            self.waker.register(cx.waker());
            // Raised between the load and the registration: the wake went to the old waker.
            match self.signals.load(Ordering::Acquire) & mask {
                0 => Poll::Pending,
                raised => Poll::Ready(raised),
            }
        })
    }

    /// Clears [`signal`] bits the session has dealt with.
    pub fn clear(&self, bits: u8) {
        self.signals.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Notes that the client went quiet between transactions at `stamp` (see
    /// [`ClientRegistry::stamp`]), with its buffers in use.
    pub fn went_quiet(&self, stamp: u64) {
        self.quiet_since.store(stamp << 1, Ordering::Relaxed);
    }

    /// Notes that the quiet client released its buffers: no more TICK for that.
    pub fn released_buffers(&self) {
        self.quiet_since.fetch_or(1, Ordering::Relaxed);
    }

    /// Whether the client released its buffers since it last went quiet.
    pub fn buffers_released(&self) -> bool {
        self.quiet_since.load(Ordering::Relaxed) & 1 != 0
    }

    /// Raises [`signal`] bits and wakes the session.
    pub fn raise(&self, bits: u8) {
        self.signals.fetch_or(bits, Ordering::AcqRel);
        self.waker.wake();
    }

    pub fn is_killed(&self) -> bool {
        self.signals.load(Ordering::Acquire) & signal::KILLED != 0
    }

    pub fn tenant(&self) -> TenantKey {
        (self.db.to_string(), self.schema.to_string())
    }
}

/// Which tenants are paused. `all` pauses every tenant (present and future) except those
/// resumed one by one afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseSet {
    pub all: bool,
    pub tenants: HashSet<TenantKey>,
    pub resumed: HashSet<TenantKey>,
}

impl PauseSet {
    pub fn is_paused(&self, db: &str, schema: &str) -> bool {
        let key = (db.to_owned(), schema.to_owned());
        (self.all && !self.resumed.contains(&key)) || self.tenants.contains(&key)
    }
}

/// How a wait at the tenant gate ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    Killed,
    Shutdown,
}

pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    /// Sessions subscribe to this to wait for their tenant to be resumed.
    pause: watch::Sender<PauseSet>,
    /// Whether any tenant is paused: the common case of none costs a transaction one load.
    any_paused: std::sync::atomic::AtomicBool,
    /// Origin of the millisecond stamps clients keep of when they went quiet.
    epoch: Instant,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        ClientRegistry {
            next_id: AtomicU64::new(0),
            clients: Mutex::new(BTreeMap::new()),
            pause: watch::Sender::new(PauseSet::default()),
            any_paused: false.into(),
            epoch: Instant::now(),
        }
    }
}

/// Keeps a client listed while its session lives.
pub struct ClientGuard<'a> {
    registry: &'a ClientRegistry,
    pub entry: Arc<ClientEntry>,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .expect("client registry lock")
            .remove(&self.entry.id);
    }
}

impl ClientRegistry {
    /// Lists a logged-in client until the returned guard is dropped. The names are taken as
    /// shared strings: a session passes the ones its login already holds.
    pub fn register(
        &self,
        peer: SocketAddr,
        db: impl Into<Arc<str>>,
        schema: impl Into<Arc<str>>,
        user: impl Into<Arc<str>>,
        pool: impl Into<Arc<str>>,
    ) -> ClientGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            peer,
            db: db.into(),
            schema: schema.into(),
            user: user.into(),
            pool: pool.into(),
            connected_at: SystemTime::now(),
            phase: AtomicU8::new(0),
            quiet_since: AtomicU64::new(self.stamp(Instant::now()) << 1),
            pinned: Mutex::new(None),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        self.clients
            .lock()
            .expect("client registry lock")
            .insert(id, entry.clone());
        ClientGuard {
            registry: self,
            entry,
        }
    }

    /// `at` in milliseconds of this registry's clock, as [`ClientEntry::went_quiet`] takes it.
    pub fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Raises TICK on every client quiet between transactions past an idle limit: buffers
    /// held longer than [`IDLE_SHRINK`], or `idle_timeout` (zero: none). One pass every
    /// fraction of a second replaces a timer per client, which every transaction used to
    /// poll and move.
    pub fn sweep(&self, idle_timeout: Duration) {
        self.sweep_at(Instant::now(), idle_timeout);
    }

    fn sweep_at(&self, now: Instant, idle_timeout: Duration) {
        let now = self.stamp(now);
        let shrink = IDLE_SHRINK.as_millis() as u64;
        let limit = idle_timeout.as_millis() as u64;
        let clients = self.clients.lock().expect("client registry lock");
        for c in clients.values() {
            if c.phase() != Phase::Idle {
                continue;
            }
            let v = c.quiet_since.load(Ordering::Relaxed);
            let quiet = now.saturating_sub(v >> 1);
            if (v & 1 == 0 && quiet >= shrink) || (limit > 0 && quiet >= limit) {
                c.raise(signal::TICK);
            }
        }
    }

    /// Every listed client, oldest first.
    pub fn clients(&self) -> Vec<Arc<ClientEntry>> {
        self.clients
            .lock()
            .expect("client registry lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn pause_set(&self) -> PauseSet {
        self.pause.borrow().clone()
    }

    /// Holds new transactions of `tenant` (every tenant when None); those in flight finish.
    pub fn pause(&self, tenant: Option<&TenantKey>) {
        self.pause.send_modify(|p| match tenant {
            None => {
                p.all = true;
                p.resumed.clear();
            }
            Some(t) => {
                p.resumed.remove(t);
                p.tenants.insert(t.clone());
            }
        });
        self.any_paused.store(true, Ordering::SeqCst);
    }

    /// Releases what [`ClientRegistry::pause`] holds: one tenant, or everything when None.
    pub fn resume(&self, tenant: Option<&TenantKey>) {
        self.pause.send_modify(|p| match tenant {
            None => *p = PauseSet::default(),
            Some(t) => {
                p.tenants.remove(t);
                if p.all {
                    p.resumed.insert(t.clone());
                }
            }
        });
        let any = {
            let p = self.pause.borrow();
            p.all || !p.tenants.is_empty()
        };
        self.any_paused.store(any, Ordering::SeqCst);
    }

    /// Disconnects every client of `tenant`; returns how many were told to go.
    pub fn kill(&self, tenant: &TenantKey) -> usize {
        let mut n = 0;
        for c in self.clients() {
            if *c.db == *tenant.0 && *c.schema == *tenant.1 && !c.is_killed() {
                c.raise(signal::KILLED);
                n += 1;
            }
        }
        n
    }

    /// Raises `bits` on every listed client. A client listed after this returns must check
    /// the daemon's own tokens once listed (sessions do before each wait).
    pub fn raise_all(&self, bits: u8) {
        for c in self.clients() {
            c.raise(bits);
        }
    }

    /// The gate a session passes before each transaction: waits while the client's tenant is
    /// paused, unless the client is killed or the daemon stops meanwhile.
    pub async fn admit(&self, me: &ClientEntry, shutdown: &CancellationToken) -> Admission {
        if !self.any_paused.load(Ordering::SeqCst) {
            return Admission::Go;
        }
        let mut rx = self.pause.subscribe();
        if !rx.borrow().is_paused(&me.db, &me.schema) {
            return Admission::Go;
        }
        tokio::select! {
            r = rx.wait_for(|p| !p.is_paused(&me.db, &me.schema)) => match r {
                Ok(_) => Admission::Go,
                // The sender lives as long as the registry, so this is only reached at exit.
                Err(_) => Admission::Shutdown,
            },
            _ = me.signaled(signal::KILLED) => Admission::Killed,
            _ = shutdown.cancelled() => Admission::Shutdown,
        }
    }
}

/// Tells a killed client why it is being disconnected, then closes the connection. The
/// session ends normally afterwards: the client has been told, nothing else is owed.
pub async fn say_killed<S: AsyncWrite + Unpin>(s: &mut S) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    backend::error(
        &mut out,
        "FATAL",
        "57P01",
        "terminating connection due to administrator command (KILL)",
    );
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(db: &str, schema: &str) -> TenantKey {
        (db.into(), schema.into())
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn guard_lists_and_unlists() {
        let r = ClientRegistry::default();
        let g = r.register(addr(), "mm", "a", "u", "h/d");
        let _h = r.register(addr(), "mm", "b", "u", "h/d");
        assert_eq!(r.clients().len(), 2);
        assert_eq!(g.entry.phase(), Phase::Idle);
        drop(g);
        let left = r.clients();
        assert_eq!(left.len(), 1);
        assert_eq!(&*left[0].schema, "b");
    }

    #[test]
    fn pause_all_with_exceptions() {
        let r = ClientRegistry::default();
        r.pause(Some(&key("mm", "a")));
        let p = r.pause_set();
        assert!(p.is_paused("mm", "a"));
        assert!(!p.is_paused("mm", "b"));
        r.pause(None);
        r.resume(Some(&key("mm", "b")));
        let p = r.pause_set();
        assert!(p.is_paused("mm", "a"));
        assert!(!p.is_paused("mm", "b"));
        assert!(p.is_paused("mm", "c"));
        r.resume(None);
        assert_eq!(r.pause_set(), PauseSet::default());
    }

    #[test]
    fn kill_hits_only_the_tenant() {
        let r = ClientRegistry::default();
        let a = r.register(addr(), "mm", "a", "u", "p");
        let b = r.register(addr(), "mm", "b", "u", "p");
        assert_eq!(r.kill(&key("mm", "a")), 1);
        assert!(a.entry.is_killed());
        assert!(!b.entry.is_killed());
        assert_eq!(r.kill(&key("mm", "a")), 0);
    }

    #[tokio::test]
    async fn signals_wake_the_session_only_for_what_it_waits_on() {
        let r = Arc::new(ClientRegistry::default());
        let g = r.register(addr(), "mm", "a", "u", "p");
        let entry = g.entry.clone();
        let waiting =
            tokio::spawn(async move { entry.signaled(signal::HARD_STOP | signal::KILLED).await });
        tokio::task::yield_now().await;
        r.raise_all(signal::SHUTDOWN);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "SHUTDOWN is not in the mask");
        r.raise_all(signal::HARD_STOP);
        let raised = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("HARD_STOP wakes the waiting session")
            .unwrap();
        assert_eq!(raised, signal::HARD_STOP);
        // Already raised: resolves at once, with only the bits asked for.
        assert_eq!(g.entry.signaled(signal::SHUTDOWN).await, signal::SHUTDOWN);
        assert!(!g.entry.is_killed());
    }

    #[test]
    fn the_sweep_ticks_only_clients_quiet_past_a_limit() {
        let r = ClientRegistry::default();
        let quiet = r.register(addr(), "mm", "a", "u", "p");
        let busy = r.register(addr(), "mm", "b", "u", "p");
        busy.entry.set_phase(Phase::Active);
        let start = Instant::now();
        quiet.entry.went_quiet(r.stamp(start));
        busy.entry.went_quiet(r.stamp(start));
        let ticked = |e: &ClientEntry| e.signals.load(Ordering::Acquire) & signal::TICK != 0;

        r.sweep_at(start + IDLE_SHRINK / 2, Duration::ZERO);
        assert!(!ticked(&quiet.entry), "not quiet long enough");
        r.sweep_at(start + IDLE_SHRINK, Duration::ZERO);
        assert!(ticked(&quiet.entry), "buffers held past IDLE_SHRINK");
        assert!(
            !ticked(&busy.entry),
            "a client in a transaction is not idle"
        );

        // Buffers released: nothing more unless an idle timeout is set and passed.
        quiet.entry.clear(signal::TICK);
        quiet.entry.released_buffers();
        r.sweep_at(start + IDLE_SHRINK * 10, Duration::ZERO);
        assert!(!ticked(&quiet.entry));
        let timeout = IDLE_SHRINK * 5;
        r.sweep_at(start + timeout / 2, timeout);
        assert!(!ticked(&quiet.entry));
        r.sweep_at(start + timeout, timeout);
        assert!(ticked(&quiet.entry), "past the idle timeout");

        // Activity restarts the clock and the buffer release.
        quiet.entry.clear(signal::TICK);
        let later = start + timeout * 2;
        quiet.entry.went_quiet(r.stamp(later));
        r.sweep_at(later + IDLE_SHRINK / 2, timeout);
        assert!(!ticked(&quiet.entry));
        r.sweep_at(later + IDLE_SHRINK, timeout);
        assert!(ticked(&quiet.entry));
    }

    #[tokio::test]
    async fn gate_holds_until_resume() {
        let r = Arc::new(ClientRegistry::default());
        let g = r.register(addr(), "mm", "a", "u", "p");
        let stop = CancellationToken::new();
        assert_eq!(r.admit(&g.entry, &stop).await, Admission::Go);
        r.pause(Some(&key("mm", "a")));
        let entry = g.entry.clone();
        let (r2, stop2) = (r.clone(), stop.clone());
        let waiting = tokio::spawn(async move { r2.admit(&entry, &stop2).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        r.resume(Some(&key("mm", "a")));
        assert_eq!(waiting.await.unwrap(), Admission::Go);

        r.pause(None);
        let entry = g.entry.clone();
        let (r2, stop2) = (r.clone(), stop.clone());
        let waiting = tokio::spawn(async move { r2.admit(&entry, &stop2).await });
        r.kill(&key("mm", "a"));
        assert_eq!(waiting.await.unwrap(), Admission::Killed);
    }
}
