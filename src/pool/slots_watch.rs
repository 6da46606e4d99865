//! The pool's watchdog: the one timer behind every waiting checkout. It expires waiters past
//! their limit and hands connections held for their own schema to waiters held back the hold
//! limit ([`HOLD_LIMIT`](super::HOLD_LIMIT), or the typical wait when longer; see the parent
//! module for why waiters keep no timer of their own).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Affine, Grant, Slots};

impl<C: Affine> Slots<C> {
    /// The pool's watchdog: expires waiters past their limit and hands held connections to
    /// waiters held back the hold limit. Runs until the pool is closed; a pool whose checkouts
    /// may wait needs it running (the destination pool spawns it with its first waiter).
    pub async fn watch(&self) {
        loop {
            // Made before looking, so a wake-up asked for meanwhile is not lost.
            let woken = self.watch.notified();
            let Some(next) = self.sweep(Instant::now()) else {
                return;
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// One look of the watchdog at `now`; returns when to look next (None: when woken), or
    /// None when the pool is closed.
    #[allow(clippy::option_option)]
    fn sweep(&self, now: Instant) -> Option<Option<Instant>> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        // Dropping a waiter's sender tells it it timed out (the pool is not closed).
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.waiters)
            .into_iter()
            .partition(|w| w.deadline <= now);
        st.waiters = waiting;
        // What is idle while checkouts wait is held for its own schema; a waiter held back
        // long enough takes it, idle longest first (least likely wanted back by its schema).
        let hold = self.limits().hold(&st.typical_wait);
        while !st.idle.is_empty() {
            match st.waiters.front() {
                Some(w) if now.saturating_duration_since(w.since) >= hold => {}
                _ => break,
            }
            let (Some(w), conn) = (st.waiters.pop_front(), st.idle.remove(0)) else {
                break;
            };
            if let Err(Grant::Conn(conn)) = w.tx.send(Grant::Conn(conn)) {
                st.idle.insert(0, conn);
            }
        }
        let mut next = st.waiters.iter().map(|w| w.deadline).min();
        if let (false, Some(w)) = (st.idle.is_empty(), st.waiters.front()) {
            let rescue = w.since + hold;
            next = Some(next.map_or(rescue, |n| n.min(rescue)));
        }
        st.watch_at = next;
        st.wake_watch = false;
        drop(st);
        drop(expired);
        Some(next)
    }
}
