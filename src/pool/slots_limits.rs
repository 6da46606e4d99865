//! How long schema affinity may keep a waiter waiting, and how those bounds stretch with what
//! waiting is like in the pool now: fixed bounds fail exactly when every checkout waits long.

use std::time::Duration;

/// The pool's affinity bounds as configured ([`PASS_OVER_LIMIT`](super::PASS_OVER_LIMIT),
/// [`HOLD_LIMIT`](super::HOLD_LIMIT), or others in tests); zero turns either off.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    pub(super) pass_over: Duration,
    pub(super) hold: Duration,
}

impl Limits {
    /// How long the oldest waiter may be passed over: the configured bound, or twice the
    /// typical wait when that is longer. Every checkout waits long when the host is loaded or
    /// transactions are slow; a fixed bound then served nearly every checkout first come,
    /// first served, and 78% of them had to switch schema (10 hot tenants x 4 clients over 20
    /// connections, 8 ms transactions), adding a `SET` round trip to most transactions just
    /// when the destination has least to spare. Relative to the typical wait, no client still
    /// waits more than about twice what the others do.
    pub(super) fn pass_over(self, typical: &TypicalWait) -> Duration {
        if self.pass_over.is_zero() {
            return Duration::ZERO;
        }
        self.pass_over.max(typical.get().saturating_mul(2))
    }

    /// How long a returned connection may be held for its own schema while the oldest waiter
    /// is on another: the configured bound, or the typical wait when that is longer, for the
    /// reason [`Limits::pass_over`] gives.
    pub(super) fn hold(self, typical: &TypicalWait) -> Duration {
        if self.hold.is_zero() {
            return Duration::ZERO;
        }
        self.hold.max(typical.get())
    }
}

/// A moving average of how long served checkouts waited (weight 1/8: a few dozen hand-offs
/// follow a change in load), kept in nanoseconds under the pool's lock.
#[derive(Default)]
pub(super) struct TypicalWait {
    nanos: u64,
}

impl TypicalWait {
    pub(super) fn get(&self) -> Duration {
        Duration::from_nanos(self.nanos)
    }

    /// Adds a served checkout's wait.
    pub(super) fn note(&mut self, waited: Duration) {
        let sample = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        let avg = self.nanos;
        self.nanos = if sample >= avg {
            avg + (sample - avg) / 8
        } else {
            avg - (avg - sample) / 8
        };
    }
}
