//! The prepared statements one server connection holds, as a bounded LRU set of server names.

use std::collections::HashMap;

#[derive(Debug)]
pub struct PreparedSet {
    capacity: usize,
    tick: u64,
    names: HashMap<Vec<u8>, u64>,
    /// DDL changed a result type under a cached plan: every statement here must be dropped
    /// (DEALLOCATE ALL) before the connection serves anyone again.
    stale: bool,
}

impl PreparedSet {
    pub fn new(capacity: usize) -> Self {
        PreparedSet {
            capacity: capacity.max(1),
            tick: 0,
            names: HashMap::new(),
            stale: false,
        }
    }

    /// Whether `name` is prepared; marks it recently used.
    pub fn touch(&mut self, name: &[u8]) -> bool {
        self.tick += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `name`; returns the least recently used name to Close when over capacity.
    pub fn insert(&mut self, name: &[u8]) -> Option<Vec<u8>> {
        self.tick += 1;
        self.names.insert(name.to_vec(), self.tick);
        if self.names.len() <= self.capacity {
            return None;
        }
        let oldest = self
            .names
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(n, _)| n.clone())?;
        self.names.remove(&oldest);
        Some(oldest)
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.names.remove(name);
    }

    /// After DISCARD/DEALLOCATE the server holds none of them.
    pub fn clear(&mut self) {
        self.names.clear();
        self.stale = false;
    }

    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut s = PreparedSet::new(2);
        assert_eq!(s.insert(b"a"), None);
        assert_eq!(s.insert(b"b"), None);
        assert!(s.touch(b"a"));
        assert_eq!(s.insert(b"c"), Some(b"b".to_vec()));
        assert!(s.touch(b"a") && s.touch(b"c") && !s.touch(b"b"));
        s.clear();
        assert!(s.is_empty());
    }
}
