//! Who a client is: the tenant (database, schema) and session settings it asked for at startup.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("no database specified in startup packet")]
    NoDatabase,
    #[error(
        "no schema specified: set the schema_search_path startup parameter or options='-c search_path=<schema>'"
    )]
    NoSchema,
    #[error("conflicting schemas: schema_search_path={0:?} but options set search_path={1:?}")]
    Conflict(String, String),
    #[error("startup parameter {0:?} is not supported by this pooler")]
    Unsupported(String),
}

/// The parsed identity and wishes of a client, from its StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub database: String,
    pub schema: String,
    /// Session settings to apply on every server connection it uses (lower-case names).
    pub settings: BTreeMap<String, String>,
}

/// Splits a libpq `options` value into words: whitespace separates, backslash escapes.
fn option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// `name=value` pairs set by `-c name=value`, `-cname=value` or `--name=value`.
fn option_settings(options: &str) -> Vec<(String, String)> {
    let words = option_words(options);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let pair = if w == "-c" {
            i += 1;
            words.get(i).map(String::as_str)
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest)
        } else {
            w.strip_prefix("-c")
        };
        if let Some((k, v)) = pair.and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_").to_ascii_lowercase(), v.to_owned()));
        }
        i += 1;
    }
    out
}

/// A schema named in a search_path value: a double-quoted identifier is unquoted, otherwise as given.
fn schema_from(value: &str) -> String {
    let v = value.trim();
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if v.len() >= 2 => inner.replace("\"\"", "\""),
        _ => v.to_owned(),
    }
}

/// Startup keys the pooler consumes itself rather than applying as settings.
const CONSUMED: &[&str] = &[
    "user",
    "database",
    "options",
    "schema_search_path",
    "search_path",
];

pub fn identify(params: &[(String, String)]) -> Result<ClientIdentity, TenantError> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let user = get("user")
        .filter(|u| !u.is_empty())
        .ok_or(TenantError::NoUser)?;
    let database = get("database")
        .filter(|d| !d.is_empty())
        .ok_or(TenantError::NoDatabase)?;
    if let Some(r) = get("replication") {
        return Err(TenantError::Unsupported(format!("replication={r}")));
    }
    let mut settings = BTreeMap::new();
    let mut from_options = None;
    for (k, v) in option_settings(get("options").unwrap_or("")) {
        if k == "search_path" {
            from_options = Some(schema_from(&v));
        } else {
            settings.insert(k, v);
        }
    }
    let from_param = get("schema_search_path")
        .or(get("search_path"))
        .map(schema_from)
        .filter(|s| !s.is_empty());
    let schema = match (from_param, from_options) {
        (Some(a), Some(b)) if a != b => return Err(TenantError::Conflict(a, b)),
        (Some(a), _) => a,
        (None, Some(b)) if !b.is_empty() => b,
        _ => return Err(TenantError::NoSchema),
    };
    for (k, v) in params {
        if !CONSUMED.contains(&k.as_str()) && k != "replication" {
            settings.insert(k.to_ascii_lowercase(), v.clone());
        }
    }
    Ok(ClientIdentity {
        user: user.to_owned(),
        database: database.to_owned(),
        schema,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn schema_from_each_source() {
        let base = [("user", "u"), ("database", "d")];
        for opt in [
            ("schema_search_path", "t1"),
            ("options", "-c search_path=t1"),
            ("options", "-csearch_path=t1"),
            ("options", "--search_path=t1"),
            ("options", "-c statement_timeout=5 -c search_path=\"t1\""),
        ] {
            let mut v = p(&base);
            v.extend(p(&[opt]));
            assert_eq!(identify(&v).unwrap().schema, "t1", "{opt:?}");
        }
    }

    #[test]
    fn settings_are_collected() {
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("schema_search_path", "s"),
            ("application_name", "app"),
            ("options", "-c statement_timeout=5000"),
        ]);
        let id = identify(&v).unwrap();
        assert_eq!(id.settings.get("application_name").unwrap(), "app");
        assert_eq!(id.settings.get("statement_timeout").unwrap(), "5000");
        assert!(!id.settings.contains_key("options"));
    }

    #[test]
    fn errors_say_what_is_missing() {
        assert_eq!(identify(&p(&[("database", "d")])), Err(TenantError::NoUser));
        assert_eq!(identify(&p(&[("user", "u")])), Err(TenantError::NoDatabase));
        assert_eq!(
            identify(&p(&[("user", "u"), ("database", "d")])),
            Err(TenantError::NoSchema)
        );
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("schema_search_path", "a"),
            ("options", "-c search_path=b"),
        ]);
        assert!(matches!(identify(&v), Err(TenantError::Conflict(..))));
    }

    #[test]
    fn quoted_schema_with_spaces() {
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("options", "-c search_path=\"My\\ Schema\""),
        ]);
        assert_eq!(identify(&v).unwrap().schema, "My Schema");
    }
}
