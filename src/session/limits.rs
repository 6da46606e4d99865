//! Client connection caps: a global one and one per tenant, released when the session ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::HashMap;

#[derive(Default)]
pub struct ClientLimits {
    pub max_total: usize,
    pub max_per_tenant: usize,
    total: AtomicUsize,
    /// Keyed by the login's own shared names: entering copies no string.
    per_tenant: Mutex<HashMap<TenantKey, usize>>,
}

/// (database, schema), shared with the client's login.
type TenantKey = (Arc<str>, Arc<str>);

/// Holds one slot of the global cap.
pub struct TotalSlot<'a>(&'a ClientLimits);

impl Drop for TotalSlot<'_> {
    fn drop(&mut self) {
        self.0.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one slot of a tenant's cap.
pub struct TenantSlot<'a> {
    limits: &'a ClientLimits,
    key: TenantKey,
}

impl Drop for TenantSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.limits.per_tenant.lock().expect("tenant limits");
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl ClientLimits {
    pub fn new(max_total: u32, max_per_tenant: u32) -> Self {
        ClientLimits {
            max_total: max_total as usize,
            max_per_tenant: max_per_tenant as usize,
            ..Default::default()
        }
    }

    /// A slot under the global cap (0 = unlimited), or None when full.
    pub fn enter(&self) -> Option<TotalSlot<'_>> {
        let n = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = TotalSlot(self);
        (self.max_total == 0 || n <= self.max_total).then_some(slot)
    }

    pub fn active(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// A slot under the tenant's cap, or None when that tenant is full.
    pub fn enter_tenant(&self, db: &Arc<str>, schema: &Arc<str>) -> Option<TenantSlot<'_>> {
        let key = (db.clone(), schema.clone());
        let mut map = self.per_tenant.lock().expect("tenant limits");
        let n = map.entry(key.clone()).or_insert(0);
        if self.max_per_tenant != 0 && *n >= self.max_per_tenant {
            return None;
        }
        *n += 1;
        Some(TenantSlot { limits: self, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_releases() {
        let l = ClientLimits::new(2, 1);
        let a = l.enter().unwrap();
        let _b = l.enter().unwrap();
        assert!(l.enter().is_none());
        drop(a);
        assert!(l.enter().is_some());
        let (d, s, other) = ("d".into(), "s".into(), "other".into());
        let t = l.enter_tenant(&d, &s).unwrap();
        assert!(l.enter_tenant(&d, &s).is_none());
        assert!(l.enter_tenant(&d, &other).is_some());
        drop(t);
        assert!(l.enter_tenant(&d, &s).is_some());
    }
}
