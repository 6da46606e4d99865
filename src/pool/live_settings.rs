//! A pool's settings as every checkout and release reads them: one atomic per field, so the
//! per-transaction reads are plain loads of a cache line that only a reload writes. Behind a
//! lock, each read was two atomic read-modify-writes on a line both workers kept stealing
//! from each other.
//!
//! A reload stores the fields one by one, so a reader racing it may see some fields old and
//! some new. Every field is valid on its own and none depends on another (MaxOpen and MaxIdle
//! are enforced by the slots, resized under their own lock), so such a mix is harmless.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use crate::config::PoolSettings;

pub struct LiveSettings {
    max_idle: AtomicU32,
    max_open: AtomicU32,
    max_prepared_statements: AtomicU32,
    /// Durations in nanoseconds; anything beyond u64 (584 years) is clamped.
    max_lifetime: AtomicU64,
    max_idle_time: AtomicU64,
    conn_create_timeout: AtomicU64,
    conn_close_timeout: AtomicU64,
    schema_exec_timeout: AtomicU64,
    wait_timeout: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn duration(a: &AtomicU64) -> Duration {
    Duration::from_nanos(a.load(Relaxed))
}

impl LiveSettings {
    pub fn new(s: &PoolSettings) -> Self {
        LiveSettings {
            max_idle: AtomicU32::new(s.max_idle),
            max_open: AtomicU32::new(s.max_open),
            max_prepared_statements: AtomicU32::new(s.max_prepared_statements),
            max_lifetime: AtomicU64::new(nanos(s.max_lifetime)),
            max_idle_time: AtomicU64::new(nanos(s.max_idle_time)),
            conn_create_timeout: AtomicU64::new(nanos(s.conn_create_timeout)),
            conn_close_timeout: AtomicU64::new(nanos(s.conn_close_timeout)),
            schema_exec_timeout: AtomicU64::new(nanos(s.schema_exec_timeout)),
            wait_timeout: AtomicU64::new(nanos(s.wait_timeout)),
        }
    }

    pub fn load(&self) -> PoolSettings {
        PoolSettings {
            max_idle: self.max_idle.load(Relaxed),
            max_open: self.max_open.load(Relaxed),
            max_prepared_statements: self.max_prepared_statements.load(Relaxed),
            max_lifetime: duration(&self.max_lifetime),
            max_idle_time: duration(&self.max_idle_time),
            conn_create_timeout: duration(&self.conn_create_timeout),
            conn_close_timeout: duration(&self.conn_close_timeout),
            schema_exec_timeout: duration(&self.schema_exec_timeout),
            wait_timeout: duration(&self.wait_timeout),
        }
    }

    pub fn store(&self, s: &PoolSettings) {
        self.max_idle.store(s.max_idle, Relaxed);
        self.max_open.store(s.max_open, Relaxed);
        self.max_prepared_statements
            .store(s.max_prepared_statements, Relaxed);
        self.max_lifetime.store(nanos(s.max_lifetime), Relaxed);
        self.max_idle_time.store(nanos(s.max_idle_time), Relaxed);
        self.conn_create_timeout
            .store(nanos(s.conn_create_timeout), Relaxed);
        self.conn_close_timeout
            .store(nanos(s.conn_close_timeout), Relaxed);
        self.schema_exec_timeout
            .store(nanos(s.schema_exec_timeout), Relaxed);
        self.wait_timeout.store(nanos(s.wait_timeout), Relaxed);
    }

    /// The one field a release needs.
    pub fn max_lifetime(&self) -> Duration {
        duration(&self.max_lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_stored_is_loaded_back() {
        let first = PoolSettings::default();
        let live = LiveSettings::new(&first);
        assert_eq!(live.load(), first);
        let next = PoolSettings {
            max_idle: 7,
            max_open: 9,
            max_prepared_statements: 11,
            max_lifetime: Duration::from_secs(13),
            max_idle_time: Duration::ZERO,
            conn_create_timeout: Duration::from_millis(1500),
            conn_close_timeout: Duration::from_secs(17),
            schema_exec_timeout: Duration::from_secs(19),
            wait_timeout: Duration::MAX,
        };
        live.store(&next);
        let back = live.load();
        assert_eq!(back.wait_timeout, Duration::from_nanos(u64::MAX));
        assert_eq!(
            back,
            PoolSettings {
                wait_timeout: back.wait_timeout,
                ..next
            }
        );
        assert_eq!(live.max_lifetime(), Duration::from_secs(13));
    }
}
