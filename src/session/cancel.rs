//! Cancel keys: each client gets its own BackendKeyData, mapped to whichever server connection
//! is running its query right now.
//!
//! A forwarded cancel is followed until the server has dealt with it, and the connection it
//! targets is not lent to anyone meanwhile. PostgreSQL signals the backend twice for one
//! CancelRequest (the process and its group) from a short-lived process; when that process is
//! descheduled between the two, the second signal lands late and cancels whatever the backend
//! runs then. Through a transaction pooler that would be another client's query. The server
//! closes the cancel connection once both signals are sent, so its end is the moment the
//! connection is safe to reuse.
//!
//! A client still queued for a server connection can be cancelled too: its request never
//! reached a server, so the session answers it as PostgreSQL answers a cancelled statement.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use foldhash::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::registry::{ClientEntry, signal};

/// How long a forwarded cancel is followed, and so the longest a connection it targets is
/// kept from reuse; past it the connection is closed rather than trusted. A server answers
/// a CancelRequest within milliseconds.
pub const CANCEL_SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// The server-side key of the connection a client is using.
#[derive(Debug, Clone, Copy)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// A client's cancel target: the server connection it is using, if any, and how many cancels
/// forwarded to that connection the server has not finished with.
#[derive(Default)]
pub struct CancelCell {
    state: Mutex<Target>,
    settled: Notify,
    /// The client waits for a server connection with a whole request that can be refused.
    /// An atomic rather than the lock: nearly every checkout may queue under load.
    queued: AtomicBool,
    /// The client's registry entry: a cancel while queued is raised there as
    /// [`signal::CANCEL`], next to the other signals the session already waits on.
    session: OnceLock<Arc<ClientEntry>>,
}

#[derive(Default)]
struct Target {
    key: Option<ServerKey>,
    in_flight: u32,
}

pub type CancelSlot = Arc<CancelCell>;

impl CancelCell {
    fn state(&self) -> MutexGuard<'_, Target> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session lent a server connection: cancels go to it from now on.
    pub fn set(&self, key: ServerKey) {
        self.state().key = Some(key);
    }

    /// The session is done with the connection; returns whether a cancel sent to it is still
    /// in flight (see [`CancelCell::settled`]).
    pub fn clear(&self) -> bool {
        let mut st = self.state();
        st.key = None;
        st.in_flight > 0
    }

    /// Waits until no forwarded cancel is in flight; false when `limit` ran out first.
    pub async fn settled(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.settled.notified();
                tokio::pin!(notified);
                // Registered before looking, so an end between the look and the wait counts.
                notified.as_mut().enable();
                if self.state().in_flight == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Ties the cell to the client's registry entry, once the client is listed.
    pub fn attach(&self, session: Arc<ClientEntry>) {
        let _ = self.session.set(session);
    }

    /// The session queues for a server connection with a request it can refuse whole; a
    /// cancel meanwhile raises [`signal::CANCEL`] on its entry.
    pub fn queue(&self) {
        self.queued.store(true, Ordering::Release);
    }

    /// The session left the queue.
    pub fn unqueue(&self) {
        self.queued.store(false, Ordering::Release);
    }

    /// A cancel arrives: the key to send it to, counted in flight. None when the client has
    /// no server connection; a client queued for one is told to give up instead.
    fn begin(&self) -> Option<ServerKey> {
        let mut st = self.state();
        let Some(key) = st.key else {
            if let (true, Some(session)) = (self.queued.load(Ordering::Acquire), self.session.get())
            {
                session.raise(signal::CANCEL);
            }
            return None;
        };
        st.in_flight += 1;
        Some(key)
    }

    fn end(&self) {
        let mut st = self.state();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0 {
            drop(st);
            self.settled.notify_waiters();
        }
    }
}

/// Ends a cancel however its forwarding stops (done, failed, or its task dropped).
struct InFlight(CancelSlot);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[derive(Default)]
pub struct CancelMap {
    next_pid: AtomicI32,
    slots: Mutex<HashMap<i32, (i32, CancelSlot)>>,
}

/// Removes the client's key when its session ends.
pub struct CancelGuard<'a> {
    map: &'a CancelMap,
    pub pid: i32,
    pub secret: i32,
    pub slot: CancelSlot,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.map.slots.lock().expect("cancel map").remove(&self.pid);
    }
}

impl CancelMap {
    pub fn register(&self) -> CancelGuard<'_> {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & 0x7fff_ffff;
        let secret: i32 = rand::random();
        let slot = CancelSlot::default();
        self.slots
            .lock()
            .expect("cancel map")
            .insert(pid, (secret, slot.clone()));
        CancelGuard {
            map: self,
            pid,
            secret,
            slot,
        }
    }

    /// Forwards a CancelRequest to the right server and waits until the server is done with
    /// it (at most [`CANCEL_SETTLE_LIMIT`]); unknown or wrong keys are ignored.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let cell = {
            let slots = self.slots.lock().expect("cancel map");
            match slots.get(&pid) {
                Some((s, slot)) if *s == secret => slot.clone(),
                _ => return false,
            }
        };
        let Some(key) = cell.begin() else {
            return false;
        };
        let _in_flight = InFlight(cell);
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(key.pid, key.secret, &mut buf);
        let forward = async {
            let mut s = tokio::net::TcpStream::connect(key.addr).await?;
            s.write_all(&buf).await?;
            // The server answers nothing and closes the connection once it has signalled.
            let mut sink = [0u8; 64];
            while s.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(CANCEL_SETTLE_LIMIT, forward).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot forward cancel request");
                false
            }
            Err(_) => {
                tracing::warn!(limit = ?CANCEL_SETTLE_LIMIT, "server did not finish a cancel request in time");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::super::registry::ClientRegistry;
    use super::*;

    fn key() -> ServerKey {
        ServerKey {
            addr: "127.0.0.1:5432".parse().expect("address"),
            pid: 7,
            secret: 9,
        }
    }

    #[tokio::test]
    async fn a_cancel_while_queued_reaches_the_queued_session_only() {
        let clients = ClientRegistry::default();
        let me = clients.register(key().addr, "mm", "a", "u", "h/d");
        let cell = CancelSlot::default();
        cell.attach(me.entry.clone());
        let raised = || me.entry.signaled(signal::CANCEL).now_or_never().is_some();
        assert!(cell.begin().is_none());
        assert!(!raised(), "a cancel while not queued is ignored");
        cell.queue();
        let waiter = tokio::spawn({
            let entry = me.entry.clone();
            async move { entry.signaled(signal::CANCEL).await }
        });
        tokio::task::yield_now().await;
        assert!(cell.begin().is_none(), "nothing is sent to a server");
        assert_eq!(
            waiter.await.expect("waiter"),
            signal::CANCEL,
            "the queued session hears it"
        );
        cell.unqueue();
        me.entry.clear(signal::CANCEL);
        assert!(cell.begin().is_none());
        assert!(!raised(), "a cancel after leaving the queue is ignored");
    }

    #[tokio::test]
    async fn a_cancel_in_flight_holds_the_connection_until_it_ends() {
        let cell = CancelSlot::default();
        assert!(cell.begin().is_none(), "no connection, nothing to cancel");
        cell.set(key());
        assert_eq!(cell.begin().map(|k| k.pid), Some(7));
        assert!(cell.clear(), "the cancel is still in flight");
        assert!(!cell.settled(Duration::from_millis(20)).await);
        let waiter = tokio::spawn({
            let cell = cell.clone();
            async move { cell.settled(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        drop(InFlight(cell.clone()));
        assert!(
            waiter.await.expect("waiter"),
            "settled once the cancel ended"
        );
        cell.set(key());
        assert!(!cell.clear(), "nothing in flight any more");
    }
}
