//! Brute-force protection: failed logins are counted per source address, and an address past
//! the threshold is refused before any password work until its window passes.
//!
//! Successful logins do not clear the count: an attacker who owns one tenant could otherwise
//! reset their counter between guesses at another tenant's password. Refused attempts do not
//! extend a block either, so a legitimate client behind the same address gets back in once the
//! window is over, however long the attack keeps knocking.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most; past this the oldest entries go, so a flood of distinct
/// source addresses costs bounded memory (and, at worst, forgets old offenders early).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// A window longer than this is treated as this, so `now + window` cannot overflow.
const MAX_WINDOW: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The address is blocked; `retry_after` is how long until it may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many failed authentication attempts from this address; try again in {} s",
    retry_after.as_secs().max(1)
)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// What is known about one source address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start of the counting window: the first failure since the last window ended.
    since: Instant,
    failures: u32,
    /// Set when `failures` reached the threshold: refused until then.
    blocked_until: Option<Instant>,
}

impl Entry {
    /// When this entry stops mattering.
    fn expires(&self, window: Duration) -> Instant {
        self.blocked_until.unwrap_or(self.since + window)
    }
}

pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl AuthLimiter {
    /// `max_failures` failures within `window` block an address for `window`; zero in either
    /// disables the limiter.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self::with_capacity(max_failures, window, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> Self {
        AuthLimiter {
            max_failures,
            window: window.min(MAX_WINDOW),
            capacity: capacity.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.max_failures > 0 && !self.window.is_zero()
    }

    /// Ok when `peer` may attempt a login now.
    pub fn check(&self, peer: IpAddr) -> Result<(), Throttled> {
        // Nearly every address has no entry: the clock is read only for one that has.
        if !self.enabled()
            || !self
                .table
                .lock()
                .expect("auth limiter")
                .contains_key(&key(peer))
        {
            return Ok(());
        }
        self.check_at(peer, Instant::now())
    }

    /// Counts one failed login from `peer`.
    pub fn failed(&self, peer: IpAddr) {
        self.failed_at(peer, Instant::now())
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.table.lock().expect("auth limiter").len()
    }

    fn check_at(&self, peer: IpAddr, now: Instant) -> Result<(), Throttled> {
        if !self.enabled() {
            return Ok(());
        }
        let key = key(peer);
        let mut table = self.table.lock().expect("auth limiter");
        let Some(e) = table.get(&key) else {
            return Ok(());
        };
        if now >= e.expires(self.window) {
            table.remove(&key);
            return Ok(());
        }
        match e.blocked_until {
            Some(until) => Err(Throttled {
                retry_after: until - now,
            }),
            None => Ok(()),
        }
    }

    fn failed_at(&self, peer: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let key = key(peer);
        let mut table = self.table.lock().expect("auth limiter");
        if !table.contains_key(&key) && table.len() >= self.capacity {
            self.make_room(&mut table, now);
        }
        let fresh = Entry {
            since: now,
            failures: 0,
            blocked_until: None,
        };
        let e = table.entry(key).or_insert(fresh);
        if now >= e.expires(self.window) {
            *e = fresh;
        }
        if e.blocked_until.is_some() {
            return;
        }
        e.failures += 1;
        if e.failures >= self.max_failures {
            e.blocked_until = Some(now + self.window);
            tracing::warn!(peer = %key, failures = e.failures, window = ?self.window,
                "too many failed authentication attempts; address blocked");
        }
    }

    /// Drops expired entries, then, if still full, the oldest eighth, so eviction work is
    /// paid once per many insertions rather than on each.
    fn make_room(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        table.retain(|_, e| now < e.expires(self.window));
        if table.len() < self.capacity {
            return;
        }
        let drop = (self.capacity / 8).max(1);
        let mut ages: Vec<Instant> = table.values().map(|e| e.since).collect();
        let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        let mut dropped = 0;
        table.retain(|_, e| {
            if dropped < drop && e.since <= cutoff {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

/// The unit an address is counted under. An IPv6 host usually owns a whole /64, so counting
/// single IPv6 addresses would let it try 2^64 times; IPv4-mapped addresses count as IPv4.
fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const WINDOW: Duration = Duration::from_secs(60);

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn blocks_after_the_threshold_until_the_window_passes() {
        let l = AuthLimiter::new(3, WINDOW);
        let t0 = Instant::now();
        for i in 0..2 {
            l.failed_at(ip(1), t0 + Duration::from_secs(i));
            assert_eq!(l.check_at(ip(1), t0 + Duration::from_secs(i)), Ok(()));
        }
        let t3 = t0 + Duration::from_secs(2);
        l.failed_at(ip(1), t3);
        let err = l.check_at(ip(1), t3).unwrap_err();
        assert_eq!(err.retry_after, WINDOW);
        assert!(
            err.to_string()
                .contains("too many failed authentication attempts"),
            "{err}"
        );
        // Still blocked just before the end, even after more failures; free after it.
        l.failed_at(ip(1), t3 + Duration::from_secs(30));
        let late = t3 + WINDOW - Duration::from_millis(1);
        assert!(l.check_at(ip(1), late).is_err());
        assert_eq!(l.check_at(ip(1), t3 + WINDOW), Ok(()));
        // Another address was never affected.
        assert_eq!(l.check_at(ip(2), t3), Ok(()));
    }

    #[test]
    fn failures_spread_over_more_than_a_window_do_not_block() {
        let l = AuthLimiter::new(3, WINDOW);
        let t0 = Instant::now();
        l.failed_at(ip(1), t0);
        l.failed_at(ip(1), t0 + Duration::from_secs(1));
        // The window that began at t0 is over: counting starts again.
        let later = t0 + WINDOW + Duration::from_secs(1);
        l.failed_at(ip(1), later);
        l.failed_at(ip(1), later + Duration::from_secs(1));
        assert_eq!(l.check_at(ip(1), later + Duration::from_secs(1)), Ok(()));
        l.failed_at(ip(1), later + Duration::from_secs(2));
        assert!(l.check_at(ip(1), later + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn zero_disables() {
        let t0 = Instant::now();
        for l in [
            AuthLimiter::new(0, WINDOW),
            AuthLimiter::new(3, Duration::ZERO),
        ] {
            for _ in 0..100 {
                l.failed_at(ip(1), t0);
            }
            assert_eq!(l.check_at(ip(1), t0), Ok(()));
            assert_eq!(l.tracked(), 0);
        }
    }

    #[test]
    fn one_failure_threshold_blocks_at_once() {
        let l = AuthLimiter::new(1, WINDOW);
        let t0 = Instant::now();
        assert_eq!(l.check_at(ip(1), t0), Ok(()));
        l.failed_at(ip(1), t0);
        assert!(l.check_at(ip(1), t0).is_err());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let l = AuthLimiter::with_capacity(2, WINDOW, 64);
        let t0 = Instant::now();
        // The first address becomes blocked early; then a flood of distinct addresses.
        l.failed_at(ip(0), t0);
        l.failed_at(ip(0), t0);
        for n in 1..10_000 {
            l.failed_at(ip(n), t0 + Duration::from_millis(n as u64));
            assert!(l.tracked() <= 64, "table grew to {}", l.tracked());
        }
        // The newest offender is still remembered; the oldest was evicted.
        let now = t0 + Duration::from_secs(10);
        l.failed_at(ip(9_999), now);
        assert!(l.check_at(ip(9_999), now).is_err());
        assert_eq!(l.check_at(ip(0), now), Ok(()));
    }

    #[test]
    fn expired_entries_are_dropped_before_live_ones() {
        let l = AuthLimiter::with_capacity(2, WINDOW, 4);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // ip(100)'s window began first, but its block outlives the others' windows: eviction
        // by age alone would pick it; expiry must come first.
        l.failed_at(ip(100), at(0));
        for n in 0..3 {
            l.failed_at(ip(n), at(1));
        }
        l.failed_at(ip(100), at(50));
        l.failed_at(ip(50), at(70));
        assert!(l.check_at(ip(100), at(70)).is_err());
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = AuthLimiter::new(2, WINDOW);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.failed_at(a, t0);
        l.failed_at(b, t0);
        assert!(l.check_at(a, t0).is_err());
        assert_eq!(l.check_at(other, t0), Ok(()));

        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        l.failed_at(v4, t0);
        l.failed_at(mapped, t0);
        assert!(l.check_at(v4, t0).is_err());
    }

    #[test]
    fn a_huge_window_does_not_overflow() {
        let l = AuthLimiter::new(1, Duration::from_secs(u64::MAX));
        let t0 = Instant::now();
        l.failed_at(ip(1), t0);
        assert!(l.check_at(ip(1), t0).is_err());
    }
}
