//! The prepared statements one server connection holds, as a bounded LRU set of server names.

use std::collections::{HashMap, HashSet};

#[derive(Debug)]
pub struct PreparedSet {
    capacity: usize,
    tick: u64,
    names: HashMap<Vec<u8>, u64>,
    /// Statements still on the server whose cached plans DDL may have invalidated ("cached
    /// plan must not change result type"). They no longer count as prepared: a later Parse of
    /// the same name first closes the old one, and the rest go with DEALLOCATE ALL at the next
    /// transaction boundary, before anyone else uses the connection.
    stale: HashSet<Vec<u8>>,
}

impl PreparedSet {
    pub fn new(capacity: usize) -> Self {
        PreparedSet {
            capacity: capacity.max(1),
            tick: 0,
            names: HashMap::new(),
            stale: HashSet::new(),
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
    /// A stale statement of the same name must be closed first ([`PreparedSet::take_stale`]).
    pub fn insert(&mut self, name: &[u8]) -> Option<Vec<u8>> {
        self.tick += 1;
        self.stale.remove(name);
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
        self.stale.clear();
    }

    /// Every statement here may have a plan invalidated by DDL: none is reused from now on.
    pub fn mark_stale(&mut self) {
        self.stale.extend(self.names.drain().map(|(name, _)| name));
    }

    /// Whether stale statements remain on the server (to DEALLOCATE before reuse).
    pub fn is_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Whether `name` is a stale statement still on the server; forgets it (the caller
    /// closes it there).
    pub fn take_stale(&mut self, name: &[u8]) -> bool {
        self.stale.remove(name)
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

    #[test]
    fn stale_statements_are_no_longer_prepared_until_parsed_again() {
        let mut s = PreparedSet::new(4);
        s.insert(b"a");
        s.insert(b"b");
        s.mark_stale();
        assert!(s.is_stale());
        assert!(!s.touch(b"a"), "a stale plan is never reused");
        assert!(s.take_stale(b"a"));
        assert!(!s.take_stale(b"a"));
        s.insert(b"a");
        assert!(s.touch(b"a"));
        assert!(s.is_stale(), "b is still on the server");
        s.clear();
        assert!(!s.is_stale());
    }
}
