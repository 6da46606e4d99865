//! The core of a destination pool, behind one short lock: idle connections (least recently used
//! first), the queue of checkouts waiting for one, and the MaxOpen count. Generic over the
//! connection so its rules (schema affinity, hand-off, MaxOpen below use) are tested without a
//! server.
//!
//! `open` counts every connection that exists or is being opened: idle, in use, or reserved by a
//! checkout that is connecting. MaxOpen can drop below it on reload; the surplus is repaid by
//! closing connections as they come back, so no transaction in flight fails. Waiting checkouts
//! exist only while nothing is idle: a returned connection goes straight to a waiter, and a freed
//! slot lets the oldest waiter open a new one.
//!
//! Waiters keep no timer of their own: one watchdog per pool ([`Slots::watch`]) expires those
//! past their wait limit and hands held connections to those held back long enough. With 50
//! clients over 20 connections nearly every checkout waits, and registering and cancelling a
//! timer each time took about 6% of the pooler's instructions, plus the timer wheel's upkeep.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::stats::PoolStats;
use limits::{Limits, TypicalWait};

/// What the pool needs to know of a connection: the schema its search_path is on, if known.
pub trait Affine {
    fn schema(&self) -> Option<&str>;
}

/// How long the oldest waiter may be passed over for younger ones whose schema a returned
/// connection is already on. Affinity saves the connection one `SET search_path` round trip
/// (well under a millisecond on a LAN); making one client wait many times that for it would
/// cost that client more than anyone saves. When tenants are hot, transactions are short and
/// some connection comes back every few tens of microseconds (pgbench -S, 10 tenants x 4
/// clients over 20: one every ~40 us, 5.6% of checkouts needing a SET), so a waiter on a hot
/// tenant's schema usually gets one of its own long before this; the guard only bounds the
/// tail. A bound in time rather than in times passed over keeps the worst extra wait the same
/// whatever the release rate. It is the floor: when waits are typically longer, the bound is
/// twice the typical wait instead (see `Limits::pass_over`).
pub const PASS_OVER_LIMIT: Duration = Duration::from_millis(5);

/// How long a returned connection may be held idle for its own schema's next checkout while
/// checkouts on other schemas wait. With hot tenants a client of that schema is typically back
/// within a few tens of microseconds (its own client just got its answer), while handing the
/// connection to another tenant costs that tenant a `SET search_path` and, in turn, pushes
/// one of its own connections to a third tenant: one switch breeds the next. A waiter held
/// this long takes a held connection itself, so the bound holds even when nothing else comes
/// back. Measured with 10 hot tenants x 4 pgbench clients over 20 connections: no holding,
/// `SET` on 28% of checkouts; 1 ms, 6%; 3 ms, 0.4% with 10% more throughput than 1 ms (the
/// pool settles into each tenant keeping its own connections); 5 ms, no better than 3. The
/// bound is also the most a checkout on a cold tenant waits for it when the pool is full. It
/// is the floor: when waits are typically longer, the typical wait is the bound (see
/// `Limits::hold`).
pub const HOLD_LIMIT: Duration = Duration::from_millis(3);

/// A wait limit too far away to matter; `Instant` cannot represent every `Duration`.
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The pool is closed: no checkout succeeds any more.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    Timeout,
    Closed,
}

/// Counts at one instant, for the admin console and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub max_open: usize,
    /// Idle, in use, and being opened.
    pub open: usize,
    pub idle: usize,
    pub in_use: usize,
    pub waiting: usize,
}

pub struct Slots<C> {
    state: Mutex<State<C>>,
    stats: Arc<PoolStats>,
    pass_over: Duration,
    hold: Duration,
    /// Wakes the watchdog when it must look earlier than it planned, or stop.
    watch: Notify,
}

struct State<C> {
    /// Least recently used first: checkouts look from the end.
    idle: Vec<Box<C>>,
    /// Oldest first.
    waiters: VecDeque<Waiter<C>>,
    open: usize,
    max_open: usize,
    max_idle: usize,
    closed: bool,
    next_id: u64,
    /// When the watchdog looks next; None when it has nothing to look for.
    watch_at: Option<Instant>,
    /// The watchdog must be woken to look earlier: set under the lock, acted on after it.
    wake_watch: bool,
    /// What waiting is like in this pool now; the affinity limits stretch with it.
    typical_wait: TypicalWait,
}

struct Waiter<C> {
    id: u64,
    /// Shared with the client's session: queueing copies no string.
    schema: Arc<str>,
    since: Instant,
    /// When the watchdog gives up on its behalf.
    deadline: Instant,
    tx: oneshot::Sender<Grant<C>>,
}

/// What a waiter is handed: a connection, or a slot to open one in.
enum Grant<C> {
    Conn(Box<C>),
    Open,
}

/// The outcome of [`Slots::take`].
pub enum Take<'a, C: Affine> {
    /// Idle until now; the caller vets it and [`Slots::discard`]s it if unfit.
    Idle(Box<C>),
    /// A slot for a new connection.
    Open(Reservation<'a, C>),
    /// Nothing free: the checkout is queued.
    Wait(Waiting<'a, C>),
}

/// What a queued checkout ends up with.
pub enum Got<'a, C: Affine> {
    /// Just released by its last user and already vetted then.
    Conn(Box<C>),
    Open(Reservation<'a, C>),
}

impl<C: Affine> Slots<C> {
    pub fn new(max_open: usize, max_idle: usize, stats: Arc<PoolStats>) -> Self {
        Self::with_limits(max_open, max_idle, stats, PASS_OVER_LIMIT, HOLD_LIMIT)
    }

    /// A pool whose affinity rules wait at most `pass_over` and `hold` (see
    /// [`PASS_OVER_LIMIT`], [`HOLD_LIMIT`]; zero turns either off).
    pub fn with_limits(
        max_open: usize,
        max_idle: usize,
        stats: Arc<PoolStats>,
        pass_over: Duration,
        hold: Duration,
    ) -> Self {
        Slots {
            state: Mutex::new(State {
                idle: Vec::new(),
                waiters: VecDeque::new(),
                open: 0,
                max_open: max_open.max(1),
                max_idle,
                closed: false,
                next_id: 0,
                watch_at: None,
                wake_watch: false,
                typical_wait: TypicalWait::default(),
            }),
            stats,
            pass_over,
            hold,
            watch: Notify::new(),
        }
    }

    /// The state stays consistent between statements, so a panic elsewhere while holding the
    /// lock (there is none that can) must not wedge every later checkout.
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases the lock, then wakes the watchdog if what happened under it asked for that.
    fn unlock(&self, mut st: MutexGuard<'_, State<C>>) {
        let wake = std::mem::take(&mut st.wake_watch);
        drop(st);
        if wake {
            self.watch.notify_one();
        }
    }

    /// The most recently used idle connection on `schema`, else the least recently used idle
    /// one, else a slot to open one, else a place in the queue. Taking another tenant's
    /// connection, the one idle longest is the one its tenant is least likely to want back
    /// next: taking the most recent one made each switch cause another (46% of checkouts
    /// needed `SET search_path` with 10 hot tenants, 28% this way). While checkouts wait,
    /// what is idle is held for its own schema (see [`HOLD_LIMIT`]): a newcomer on another
    /// schema queues behind them. A queued checkout waits at most `limit`.
    pub fn take(&self, schema: &Arc<str>, limit: Duration) -> Result<Take<'_, C>, Closed> {
        let mut st = self.lock();
        if st.closed {
            return Err(Closed);
        }
        if let Some(at) = st.idle_for(schema) {
            return Ok(Take::Idle(st.idle.remove(at)));
        }
        if st.open < st.max_open {
            st.open += 1;
            return Ok(Take::Open(Reservation::new(self)));
        }
        let (tx, rx) = oneshot::channel();
        let id = st.next_id;
        st.next_id += 1;
        let since = Instant::now();
        let deadline = since + limit.min(FOREVER);
        st.plan_watch(deadline);
        st.waiters.push_back(Waiter {
            id,
            schema: schema.clone(),
            since,
            deadline,
            tx,
        });
        self.unlock(st);
        Ok(Take::Wait(Waiting {
            slots: self,
            id,
            since,
            rx,
            settled: false,
        }))
    }

    /// An idle connection, preferring one on `schema`, when there is one: the checkout that
    /// needs no waiting and no slot. (While anything is idle, nobody waits.)
    pub fn take_idle(&self, schema: &str) -> Option<Box<C>> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let at = st.idle_for(schema)?;
        Some(st.idle.remove(at))
    }

    /// Returns a connection fit for reuse (the caller closes unfit ones with [`Slots::discard`]):
    /// to a waiter, else to the idle list, unless MaxOpen was lowered below use, the idle list
    /// is full or the pool is closed, when it is closed.
    pub fn give_back(&self, conn: Box<C>) {
        let mut st = self.lock();
        let surplus = st.settle(conn, self.limits(), &self.stats);
        self.unlock(st);
        // Closing writes to the socket: not under the lock.
        drop(surplus);
    }

    /// Closes a connection taken from the pool; its slot goes to the oldest waiter, if any.
    pub fn discard(&self, conn: Box<C>) {
        drop(conn);
        self.forfeit();
    }

    /// Frees one slot (a connection closed or never opened).
    fn forfeit(&self) {
        let mut st = self.lock();
        st.shed(1);
        st.grant_openings(self.limits());
    }

    /// Applies a new MaxOpen and MaxIdle. Idle connections may fill only the slots the new
    /// limit leaves free next to those in use; connections in use over it are closed as they
    /// come back. Growing first absorbs that surplus, then lets waiters open connections.
    pub fn resize(&self, max_open: usize, max_idle: usize) {
        let surplus = {
            let mut st = self.lock();
            st.max_open = max_open.max(1);
            st.max_idle = max_idle;
            let in_use = st.open - st.idle.len();
            let keep = max_idle.min(st.max_open.saturating_sub(in_use));
            let surplus = st.trim_idle(keep);
            self.stats
                .max_idle_closed
                .fetch_add(surplus.len() as u64, Relaxed);
            st.grant_openings(self.limits());
            surplus
        };
        drop(surplus);
    }

    /// Closes the idle connections `keep` refuses, then the least recently used beyond MaxIdle.
    /// `keep` runs under the lock: it must be quick and must not touch the pool.
    pub fn prune(&self, mut keep: impl FnMut(&C) -> bool) {
        let gone = {
            let mut st = self.lock();
            let gone: Vec<Box<C>> = st.idle.extract_if(.., |c| !keep(c)).collect();
            st.shed(gone.len());
            let max_idle = st.max_idle;
            let trimmed = st.trim_idle(max_idle);
            self.stats
                .max_idle_closed
                .fetch_add(trimmed.len() as u64, Relaxed);
            st.grant_openings(self.limits());
            (gone, trimmed)
        };
        drop(gone);
    }

    /// Wakes every waiter with [`WaitError::Closed`] and closes the idle connections; those in
    /// use are closed as they come back.
    pub fn close(&self) {
        let (idle, waiters) = {
            let mut st = self.lock();
            st.closed = true;
            let idle = std::mem::take(&mut st.idle);
            st.shed(idle.len());
            (idle, std::mem::take(&mut st.waiters))
        };
        // A dropped sender wakes its waiter with an error.
        drop(waiters);
        drop(idle);
        // The watchdog stops once it sees the pool closed.
        self.watch.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn status(&self) -> PoolStatus {
        let st = self.lock();
        PoolStatus {
            max_open: st.max_open,
            open: st.open,
            idle: st.idle.len(),
            in_use: st.open - st.idle.len(),
            waiting: st.waiters.len(),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            pass_over: self.pass_over,
            hold: self.hold,
        }
    }

    /// Puts back what a waiter that gave up was handed.
    fn refund(&self, grant: Grant<C>) {
        match grant {
            Grant::Conn(conn) => self.give_back(conn),
            Grant::Open => self.forfeit(),
        }
    }
}

impl<C: Affine> State<C> {
    /// The idle connection a checkout on `schema` may take now: the most recent on its
    /// schema, else (when nobody waits, so nothing is held for its schema) the oldest.
    fn idle_for(&self, schema: &str) -> Option<usize> {
        let same = self.idle.iter().rposition(|c| c.schema() == Some(schema));
        same.or_else(|| (!self.idle.is_empty() && self.waiters.is_empty()).then_some(0))
    }

    /// Makes sure the watchdog looks again by `at`.
    fn plan_watch(&mut self, at: Instant) {
        if self.watch_at.is_none_or(|w| at < w) {
            self.watch_at = Some(at);
            self.wake_watch = true;
        }
    }

    fn shed(&mut self, n: usize) {
        debug_assert!(self.open >= n, "more connections closed than open");
        self.open = self.open.saturating_sub(n);
    }

    /// Where a returned connection goes; returns it when it must be closed.
    fn settle(&mut self, conn: Box<C>, limits: Limits, stats: &PoolStats) -> Option<Box<C>> {
        if self.closed || self.open > self.max_open {
            self.shed(1);
            return Some(conn);
        }
        match self.deliver(Grant::Conn(conn), limits) {
            None => None,
            // Only what was offered comes back; a bare slot would just be freed.
            Some(Grant::Open) => {
                self.shed(1);
                None
            }
            Some(Grant::Conn(conn)) if self.idle.len() < self.max_idle => {
                self.idle.push(conn);
                None
            }
            Some(Grant::Conn(conn)) => {
                self.shed(1);
                stats.max_idle_closed.fetch_add(1, Relaxed);
                Some(conn)
            }
        }
    }

    /// Hands `grant` to a waiter; returns it when no waiter is left, or when it is a
    /// connection held idle for its own schema. A connection goes to the oldest waiter on its
    /// schema, else to the oldest; a slot to open one goes to the oldest.
    fn deliver(&mut self, mut grant: Grant<C>, limits: Limits) -> Option<Grant<C>> {
        if self.waiters.is_empty() {
            return Some(grant);
        }
        // One clock read serves the choice and the wait's record.
        let now = Instant::now();
        // Bounded: each round removes a waiter.
        while !self.waiters.is_empty() {
            let at = match &grant {
                Grant::Conn(c) => match self.pick(c.schema(), limits, now) {
                    Some(at) => at,
                    None => return Some(grant),
                },
                Grant::Open => 0,
            };
            let Some(w) = self.waiters.remove(at) else {
                break;
            };
            self.typical_wait
                .note(now.saturating_duration_since(w.since));
            // A waiter still queued has its receiver: a waiter that gives up leaves the queue
            // under this lock before dropping it. A failed send is still not a lost grant.
            match w.tx.send(grant) {
                Ok(()) => return None,
                Err(back) => grant = back,
            }
        }
        Some(grant)
    }

    /// The waiter a connection on `schema` goes to; None to hold it idle for its schema (the
    /// watchdog then hands it to the oldest waiter once that one has waited [`Limits::hold`]).
    fn pick(&mut self, schema: Option<&str>, limits: Limits, now: Instant) -> Option<usize> {
        let (Some(schema), Some(oldest)) = (schema, self.waiters.front()) else {
            return Some(0);
        };
        if &*oldest.schema == schema {
            return Some(0);
        }
        let since = oldest.since;
        let waited = now.saturating_duration_since(since);
        if waited >= limits.pass_over(&self.typical_wait) {
            return Some(0);
        }
        if let Some(at) = self.waiters.iter().position(|w| &*w.schema == schema) {
            return Some(at);
        }
        // Held only while another connection is in use (this one still counts as in use), so
        // one comes back soon, and while the idle list has room.
        let in_use = self.open - self.idle.len();
        let limit = limits.hold(&self.typical_wait);
        let hold = waited < limit && in_use >= 2 && self.idle.len() < self.max_idle;
        if !hold {
            return Some(0);
        }
        let rescue = since + limit;
        self.plan_watch(rescue);
        None
    }

    /// Lets the oldest waiters open connections in the slots free under MaxOpen.
    fn grant_openings(&mut self, limits: Limits) {
        while !self.closed && self.open < self.max_open && !self.waiters.is_empty() {
            self.open += 1;
            if self.deliver(Grant::Open, limits).is_some() {
                self.shed(1);
            }
        }
    }

    /// Removes the least recently used idle connections beyond `keep`.
    fn trim_idle(&mut self, keep: usize) -> Vec<Box<C>> {
        let cut = self.idle.len().saturating_sub(keep);
        self.shed(cut);
        self.idle.drain(..cut).collect()
    }
}

/// A slot reserved for a connection being opened; dropped unfilled, it is freed.
pub struct Reservation<'a, C: Affine> {
    slots: &'a Slots<C>,
    armed: bool,
}

impl<'a, C: Affine> Reservation<'a, C> {
    fn new(slots: &'a Slots<C>) -> Self {
        Reservation { slots, armed: true }
    }

    /// The connection opened: the slot is now its own, given back with it.
    pub fn fill(mut self) {
        self.armed = false;
    }
}

impl<C: Affine> Drop for Reservation<'_, C> {
    fn drop(&mut self) {
        if self.armed {
            self.slots.forfeit();
        }
    }
}

/// A queued checkout. Dropped before it is served (timed out, client gone), it leaves the
/// queue; whatever was handed to it meanwhile goes back to the pool.
pub struct Waiting<'a, C: Affine> {
    slots: &'a Slots<C>,
    id: u64,
    /// When it was queued: the caller measures its wait from this, without a clock read.
    pub since: Instant,
    rx: oneshot::Receiver<Grant<C>>,
    settled: bool,
}

impl<'a, C: Affine> Waiting<'a, C> {
    /// Waits to be served, at most the limit given to [`Slots::take`] (the watchdog keeps it).
    pub async fn wait(mut self) -> Result<Got<'a, C>, WaitError> {
        let outcome = (&mut self.rx).await;
        self.settled = true;
        match outcome {
            Ok(Grant::Conn(conn)) => Ok(Got::Conn(conn)),
            Ok(Grant::Open) => Ok(Got::Open(Reservation::new(self.slots))),
            // The sender was dropped: by the watchdog, or by closing the pool.
            Err(_) if self.slots.is_closed() => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout),
        }
    }

    /// Leaves the queue. Returns what was handed over before that, if anything.
    fn withdraw(&mut self) -> Result<Option<Grant<C>>, WaitError> {
        {
            let mut st = self.slots.lock();
            if let Some(at) = st.waiters.iter().position(|w| w.id == self.id) {
                st.waiters.remove(at);
                return Ok(None);
            }
        }
        // Out of the queue, so either served (every send happens under the lock, so it has
        // landed) or the pool closed.
        self.rx.try_recv().map(Some).map_err(|_| WaitError::Closed)
    }
}

impl<C: Affine> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Ok(Some(grant)) = self.withdraw() {
            self.slots.refund(grant);
        }
    }
}

#[path = "slots_limits.rs"]
mod limits;

#[path = "slots_watch.rs"]
mod watch;

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
