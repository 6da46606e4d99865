//! Turns the file's JSON text into a clean document: canonical keys, unknown keys and
//! mistyped values reported (all of them) and removed, so the typed parse that follows succeeds.

use serde_json::{Map, Value};

use super::schema::{self, OVERRIDES, POOL, Place, SERVER_TLS};
use super::{Config, ConfigError};

/// Parses and cleans the file text. Problems are appended to `errors`; the returned document
/// keeps only the values that passed, so later steps can still report their own problems.
pub(crate) fn clean(text: &str, errors: &mut Vec<ConfigError>) -> Map<String, Value> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errors.push(ConfigError::Syntax {
                reason: e.to_string(),
            });
            return Map::new();
        }
    };
    let mut doc = match value {
        Value::Object(m) => m,
        other => {
            errors.push(ConfigError::Syntax {
                reason: format!("expected a JSON object at the top, found {}", kind(&other)),
            });
            return Map::new();
        }
    };
    let defaults = schema::defaults();
    schema::canonicalise(&mut doc, &defaults, &Place::Top, errors);

    // An override entry takes the PoolSettings keys plus the per-destination server TLS keys.
    let mut pool_keys = match defaults.get(POOL) {
        Some(Value::Object(m)) => m.clone(),
        _ => unreachable!("PoolSettings is a section"),
    };
    if let Some(Value::Object(tls)) = defaults.get(SERVER_TLS) {
        pool_keys.extend(tls.clone());
    }
    let keys: Vec<String> = doc.keys().cloned().collect();
    for key in keys {
        let known_section = match defaults.get(&key) {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        let Some(known) = known_section else {
            check_leaf(&mut doc, &Place::Top, &key, errors);
            continue;
        };
        let Some(Value::Object(section)) = doc.get_mut(&key) else {
            let found = kind(&doc[&key]);
            errors.push(ConfigError::invalid(
                key.clone(),
                format!("must be a JSON object, found {found}"),
            ));
            doc.remove(&key);
            continue;
        };
        if key == OVERRIDES {
            clean_overrides(section, &pool_keys, errors);
        } else {
            let place = Place::Section(key.clone());
            schema::canonicalise(section, known, &place, errors);
            let leaf_keys: Vec<String> = section.keys().cloned().collect();
            for leaf in leaf_keys {
                check_leaf(section, &place, &leaf, errors);
            }
        }
    }
    doc
}

fn clean_overrides(
    entries: &mut Map<String, Value>,
    pool_keys: &Map<String, Value>,
    errors: &mut Vec<ConfigError>,
) {
    let names: Vec<String> = entries.keys().cloned().collect();
    for name in names {
        let place = Place::Override(name.clone());
        let Some(Value::Object(entry)) = entries.get_mut(&name) else {
            let found = kind(&entries[&name]);
            errors.push(ConfigError::invalid(
                place.describe(),
                format!("must be a JSON object of PoolSettings keys, found {found}"),
            ));
            entries.remove(&name);
            continue;
        };
        schema::canonicalise(entry, pool_keys, &place, errors);
        let leaf_keys: Vec<String> = entry.keys().cloned().collect();
        for leaf in leaf_keys {
            check_leaf(entry, &place, &leaf, errors);
        }
    }
}

/// Reports and removes a value its field's type rejects.
fn check_leaf(
    obj: &mut Map<String, Value>,
    place: &Place,
    key: &str,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(value) = obj.get(key)
        && let Err(reason) = schema::check_leaf(place, key, value)
    {
        errors.push(ConfigError::invalid(place.path(key), reason));
        obj.remove(key);
    }
}

/// The typed parse of a cleaned document.
pub(crate) fn into_config(doc: Map<String, Value>) -> Result<Config, ConfigError> {
    serde_json::from_value(Value::Object(doc)).map_err(|e| ConfigError::Syntax {
        reason: e.to_string(),
    })
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
