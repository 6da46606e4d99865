//! envconfig-style overrides (`PERSEUS_POOLSETTINGS_MAXOPEN=20`): every scalar key can be set
//! from the environment and wins over the file, as with the Go daemon.

use serde_json::{Map, Number, Value};

use super::ConfigError;
use super::schema::{self, OVERRIDES, Place};

const PREFIX: &str = "PERSEUS_";

/// One settable key: its variable name, where it goes, and the JSON kind its default has.
struct Target {
    var: String,
    place: Place,
    key: String,
    default: Value,
}

fn targets() -> Vec<Target> {
    let mut out = Vec::new();
    for (key, default) in schema::defaults() {
        match default {
            Value::Object(section) if key != OVERRIDES => {
                for (leaf, default) in section {
                    out.push(Target {
                        var: format!("{PREFIX}{}_{}", key.to_uppercase(), leaf.to_uppercase()),
                        place: Place::Section(key.clone()),
                        key: leaf,
                        default,
                    });
                }
            }
            Value::Object(_) => {}
            default => out.push(Target {
                var: format!("{PREFIX}{}", key.to_uppercase()),
                place: Place::Top,
                key,
                default,
            }),
        }
    }
    out
}

/// Every variable name the daemon reads, e.g. for documentation and `--check` notes.
pub fn env_var_names() -> Vec<String> {
    targets().into_iter().map(|t| t.var).collect()
}

/// Variables with the `PERSEUS_` prefix that match no key: likely typos worth a warning.
pub fn unknown_env_vars<I, K, V>(env: I) -> Vec<String>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let known = env_var_names();
    env.into_iter()
        .map(|(k, _)| k.as_ref().to_string())
        .filter(|k| k.starts_with(PREFIX) && !known.contains(k))
        .collect()
}

/// Applies the overrides found in `env` to the cleaned document, reporting bad values by variable.
pub(crate) fn apply<I, K, V>(doc: &mut Map<String, Value>, env: I, errors: &mut Vec<ConfigError>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let targets = targets();
    for (var, raw) in env {
        let Some(t) = targets.iter().find(|t| t.var == var.as_ref()) else {
            continue;
        };
        let raw = raw.as_ref();
        let value = match parse(&t.default, raw) {
            Ok(v) => v,
            Err(reason) => {
                errors.push(ConfigError::Env {
                    var: t.var.clone(),
                    reason,
                });
                continue;
            }
        };
        if let Err(reason) = schema::check_leaf(&t.place, &t.key, &value) {
            errors.push(ConfigError::Env {
                var: t.var.clone(),
                reason,
            });
            continue;
        }
        let slot = match &t.place {
            Place::Top => Some(&mut *doc),
            Place::Section(s) => match doc
                .entry(s.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(m) => Some(m),
                // The file's bad section was already reported and removed; nothing to merge into.
                _ => None,
            },
            Place::Override(_) => None,
        };
        if let Some(slot) = slot {
            slot.insert(t.key.clone(), value);
        }
    }
}

/// Reads a variable as the kind of JSON value its key holds, with Go's spellings.
fn parse(default: &Value, raw: &str) -> Result<Value, String> {
    match default {
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Bool(_) => match raw {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            _ => Err(format!("`{raw}` is not a boolean (use true or false)")),
        },
        Value::Number(_) => raw
            .trim()
            .parse::<u64>()
            .map(|n| Value::Number(Number::from(n)))
            .map_err(|_| format!("`{raw}` is not a whole number of zero or more")),
        _ => Err("this key cannot be set from the environment".into()),
    }
}
