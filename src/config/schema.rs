//! The shape of `config.json`, derived from the serde types so the key lists cannot drift from them.

use serde_json::{Map, Value};

use super::{Config, ConfigError};

/// The one top-level key whose value is a map of per-destination `PoolSettings`.
pub(crate) const OVERRIDES: &str = "OverrideSettings";
pub(crate) const POOL: &str = "PoolSettings";
/// Its keys may also appear in an override entry, for one destination.
pub(crate) const SERVER_TLS: &str = "ServerTLSSettings";
pub(crate) const TOP: &str = "the top-level object";

/// The default configuration as JSON; its keys are every key the file may use.
pub(crate) fn defaults() -> Map<String, Value> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("Config serialises to a JSON object"),
    }
}

/// Where a leaf value lives in the file: top level, a section, or one override entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Top,
    Section(String),
    Override(String),
}

impl Place {
    pub(crate) fn describe(&self) -> String {
        match self {
            Place::Top => TOP.to_string(),
            Place::Section(s) => s.clone(),
            Place::Override(name) => format!("{OVERRIDES}[{name:?}]"),
        }
    }

    /// The dotted path operators see in messages, e.g. `PoolSettings.MaxOpen`.
    pub(crate) fn path(&self, key: &str) -> String {
        match self {
            Place::Top => key.to_string(),
            other => format!("{}.{key}", other.describe()),
        }
    }

    /// A document holding only this one value, every other key left at its default.
    pub(crate) fn wrap(&self, key: &str, value: Value) -> Value {
        let mut leaf = Map::new();
        leaf.insert(key.to_string(), value);
        let mut doc = Map::new();
        match self {
            Place::Top => return Value::Object(leaf),
            Place::Section(s) => {
                doc.insert(s.clone(), Value::Object(leaf));
            }
            Place::Override(name) => {
                let mut entries = Map::new();
                entries.insert(name.clone(), Value::Object(leaf));
                doc.insert(OVERRIDES.to_string(), Value::Object(entries));
            }
        }
        Value::Object(doc)
    }
}

/// Checks one value against the real serde type of its field, in isolation from the others.
pub(crate) fn check_leaf(place: &Place, key: &str, value: &Value) -> Result<(), String> {
    serde_json::from_value::<Config>(place.wrap(key, value.clone()))
        .map(|_| ())
        .map_err(|e| plain_types(&e.to_string()))
}

/// serde names Rust types; operators editing JSON think in JSON values.
fn plain_types(msg: &str) -> String {
    msg.replace(
        "expected u32",
        "expected a whole number from 0 to 4294967295",
    )
    .replace("expected u64", "expected a whole number of 0 or more")
}

/// Renames keys that match a known key case-insensitively (Go's decoder accepts those), drops
/// `null`s (Go leaves the default in place) and removes unknown keys, reporting each one.
pub(crate) fn canonicalise(
    obj: &mut Map<String, Value>,
    known: &Map<String, Value>,
    place: &Place,
    errors: &mut Vec<ConfigError>,
) {
    let original = std::mem::take(obj);
    let mut seen: Vec<(String, String)> = Vec::new();
    for (key, value) in original {
        let Some(canonical) = known.keys().find(|k| k.eq_ignore_ascii_case(&key)) else {
            errors.push(ConfigError::UnknownKey {
                key,
                section: place.describe(),
                known: known.keys().cloned().collect::<Vec<_>>().join(", "),
            });
            continue;
        };
        if let Some((first, _)) = seen.iter().find(|(_, c)| c == canonical) {
            errors.push(ConfigError::DuplicateKey {
                section: place.describe(),
                first: first.clone(),
                second: key,
                canonical: canonical.clone(),
            });
            continue;
        }
        seen.push((key, canonical.clone()));
        if !value.is_null() {
            obj.insert(canonical.clone(), value);
        }
    }
}
