//! What a pool remembers of its clients' session settings, so that alike logins share work:
//! one map per distinct set of settings, the map built for a given startup request, and the
//! ParameterStatus block a client with a given map is welcomed with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::server::FittedSettings;
use crate::proto::backend;

/// How many of each are kept; the oldest goes first. Clients of one pool rarely differ in
/// more ways than this, and a miss only costs the work it would have saved.
const KEPT: usize = 16;

#[derive(Default)]
pub struct SettingsMemo {
    /// Maps clients logged in with, shared so that clients wanting the same settings hold one
    /// map (see `ServerConn::fitted`).
    seen: Mutex<Vec<FittedSettings>>,
    /// The shared map of clients that asked at startup only for parameters the server
    /// reports, by what they asked (see [`SettingsMemo::asked`]).
    asked: Mutex<Vec<(BTreeMap<String, String>, FittedSettings)>>,
    /// The ParameterStatus block for a shared map, by the map's address.
    welcomes: Mutex<Vec<(FittedSettings, Bytes)>>,
}

impl SettingsMemo {
    /// The shared map equal to `wanted` if a client already logged in with one, else `wanted`
    /// (remembered for the next client).
    pub fn intern(&self, wanted: &FittedSettings) -> FittedSettings {
        let mut seen = self.seen.lock().expect("settings lock");
        if let Some(same) = seen.iter().find(|s| **s == *wanted) {
            return same.clone();
        }
        keep_bounded(&mut seen, wanted.clone());
        wanted.clone()
    }

    /// The settings map of a client that asked at startup for `asked`, all of them parameters
    /// the server reports, if such a client logged in before. Its map is the pool's reported
    /// startup parameters with `asked` on top, so it depends on nothing else; reusing it saves
    /// building and interning it (a dozen allocations) on every login of a reconnect storm.
    pub fn asked(&self, asked: &BTreeMap<String, String>) -> Option<FittedSettings> {
        let seen = self.asked.lock().expect("settings lock");
        seen.iter()
            .find(|(a, _)| a == asked)
            .map(|(_, m)| m.clone())
    }

    /// Remembers the map built for a client that asked for `asked`.
    pub fn remember_asked(&self, asked: BTreeMap<String, String>, map: FittedSettings) {
        let mut seen = self.asked.lock().expect("settings lock");
        if !seen.iter().any(|(a, _)| *a == asked) {
            keep_bounded(&mut seen, (asked, map));
        }
    }

    /// The ParameterStatus messages for a client whose settings are the shared map `wanted`:
    /// each parameter the server reported (`reported`), with the client's value where it set
    /// one. Built once per map, since it is the same for every client holding it.
    pub fn welcome(&self, wanted: &FittedSettings, reported: &[(String, String)]) -> Bytes {
        let mut seen = self.welcomes.lock().expect("settings lock");
        if let Some((_, w)) = seen.iter().find(|(m, _)| Arc::ptr_eq(m, wanted)) {
            return w.clone();
        }
        let mut out = BytesMut::with_capacity(512);
        for (name, default) in reported {
            let value = wanted.get(name).unwrap_or(default);
            backend::parameter_status(&mut out, reported_name(name), value);
        }
        let w = out.freeze();
        // Only complete lists are kept: before the first server connection there is none.
        if !reported.is_empty() {
            keep_bounded(&mut seen, (wanted.clone(), w.clone()));
        }
        w
    }
}

/// Spelling a client expects for the parameters PostgreSQL reports in mixed case.
fn reported_name(name: &str) -> &str {
    match name {
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        "timezone" => "TimeZone",
        other => other,
    }
}

/// Appends `item`, dropping the oldest when [`KEPT`] are kept already.
fn keep_bounded<T>(seen: &mut Vec<T>, item: T) {
    if seen.len() == KEPT {
        seen.remove(0);
    }
    seen.push(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> FittedSettings {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_welcome_is_built_once_per_shared_map_with_the_clients_values() {
        let memo = SettingsMemo::default();
        let reported = [
            ("application_name".to_string(), String::new()),
            ("datestyle".to_string(), "ISO, MDY".to_string()),
        ];
        let wanted = memo.intern(&map(&[("application_name", "app")]));
        let first = memo.welcome(&wanted, &reported);
        let mut expected = BytesMut::new();
        backend::parameter_status(&mut expected, "application_name", "app");
        backend::parameter_status(&mut expected, "DateStyle", "ISO, MDY");
        assert_eq!(first, expected);
        let again = memo.welcome(&wanted, &reported);
        assert_eq!(again.as_ptr(), first.as_ptr(), "the block is reused");
        // An equal map that is not the shared one gets its own block, with the same bytes.
        let other = memo.welcome(&map(&[("application_name", "app")]), &reported);
        assert_ne!(other.as_ptr(), first.as_ptr());
        assert_eq!(other, first);
    }

    #[test]
    fn at_most_kept_maps_are_remembered() {
        let memo = SettingsMemo::default();
        let first = memo.intern(&map(&[("x", "0")]));
        for i in 1..=KEPT {
            memo.intern(&map(&[("x", &i.to_string())]));
        }
        let again = memo.intern(&map(&[("x", "0")]));
        assert!(!Arc::ptr_eq(&first, &again), "the oldest was dropped");
    }
}
