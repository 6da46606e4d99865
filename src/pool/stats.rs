//! Per-pool counters with the Go daemon's database/sql meanings (wait count, closes by reason).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct PoolStats {
    pub wait_count: AtomicU64,
    pub wait_nanos: AtomicU64,
    pub max_idle_closed: AtomicU64,
    pub max_idle_time_closed: AtomicU64,
    pub max_lifetime_closed: AtomicU64,
    pub checkouts: AtomicU64,
    pub search_path_sets: AtomicU64,
    pub param_sets: AtomicU64,
    pub checkout_errors: AtomicU64,
    /// Checkouts handed a connection already on the tenant's schema (no `SET search_path`).
    pub affinity_hits: AtomicU64,
}

impl PoolStats {
    pub fn note_wait(&self, waited: Duration) {
        self.wait_count.fetch_add(1, Relaxed);
        self.wait_nanos.fetch_add(waited.as_nanos() as u64, Relaxed);
    }
    pub fn note_lifetime_closed(&self) {
        self.max_lifetime_closed.fetch_add(1, Relaxed);
    }
    pub fn note_idle_time_closed(&self) {
        self.max_idle_time_closed.fetch_add(1, Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
