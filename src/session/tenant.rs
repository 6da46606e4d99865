//! Who a client is: the tenant (database, schema) and session settings it asked for at startup.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::proto::startup::StartupParams;

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

/// The parsed identity and wishes of a client, from its StartupMessage. The names are shared
/// (the tenant limit, the client list and the session's state hold the same strings), so a
/// login copies each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub schema: Arc<str>,
    /// Session settings to apply on every server connection it uses (lower-case names).
    pub settings: BTreeMap<String, String>,
}

/// Whitespace as the server's `pg_split_opts` sees it (C `isspace`): ASCII only, so a
/// non-breaking space is part of a word there and here.
fn is_option_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// The words of a libpq `options` value: whitespace separates, backslash escapes. A word
/// without a backslash (nearly all) is borrowed, not copied.
fn option_words(options: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let mut rest = options;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(is_option_space);
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(is_option_space).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        if !word.contains('\\') {
            rest = after;
            return Some(Cow::Borrowed(word));
        }
        // An escaped character, whitespace included, belongs to the word.
        let mut out = String::new();
        let mut chars = rest.char_indices();
        let mut consumed = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        out.push(n);
                    }
                }
                c if is_option_space(c) => {
                    consumed = i;
                    break;
                }
                c => out.push(c),
            }
        }
        rest = &rest[consumed..];
        Some(Cow::Owned(out))
    })
}

/// Calls `each` with the `name=value` pairs set by `-c name=value`, `-cname=value` or
/// `--name=value`; the name is as given (see [`setting_name`]).
fn option_settings(options: &str, mut each: impl FnMut(&str, &str)) {
    let mut words = option_words(options);
    while let Some(w) = words.next() {
        let next;
        let pair = if w == "-c" {
            match words.next() {
                Some(n) => {
                    next = n;
                    &*next
                }
                None => break,
            }
        } else if let Some(rest) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            rest
        } else {
            continue;
        };
        if let Some((name, value)) = pair.split_once('=') {
            each(name, value);
        }
    }
}

/// A setting's name as the server knows it: lower case, dashes as underscores.
fn setting_name(name: &str) -> String {
    setting_chars(name).collect()
}

/// Whether `name`, as given in `options`, is `setting` (see [`setting_name`]), without
/// building the normalised name.
fn names_setting(name: &str, setting: &str) -> bool {
    setting_chars(name).eq(setting.chars())
}

/// The characters of [`setting_name`], one rule for both uses.
fn setting_chars(name: &str) -> impl Iterator<Item = char> + '_ {
    name.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_lowercase()
        }
    })
}

/// A schema named in a search_path value: a double-quoted identifier is unquoted, otherwise as given.
fn schema_from(value: &str) -> Cow<'_, str> {
    let v = value.trim();
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if v.len() >= 2 && inner.contains("\"\"") => {
            Cow::Owned(inner.replace("\"\"", "\""))
        }
        Some(inner) if v.len() >= 2 => Cow::Borrowed(inner),
        _ => Cow::Borrowed(v),
    }
}

/// The startup parameters the pooler consumes itself rather than applying as settings.
#[derive(Default)]
struct Consumed<'a> {
    user: Option<&'a str>,
    database: Option<&'a str>,
    options: Option<&'a str>,
    schema_search_path: Option<&'a str>,
    search_path: Option<&'a str>,
    replication: Option<&'a str>,
}

impl<'a> Consumed<'a> {
    /// Takes `value` when `name` is one of ours; false leaves it a setting.
    fn take(&mut self, name: &str, value: &'a str) -> bool {
        let slot = match name {
            "user" => &mut self.user,
            "database" => &mut self.database,
            "options" => &mut self.options,
            "schema_search_path" => &mut self.schema_search_path,
            "search_path" => &mut self.search_path,
            "replication" => &mut self.replication,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

pub fn identify(params: &StartupParams) -> Result<ClientIdentity, TenantError> {
    // One pass picks out ours: every login comes through here, and a lookup per name cost
    // more than the rest of this function.
    let mut ours = Consumed::default();
    for (k, v) in params.iter() {
        ours.take(k, v);
    }
    let user = ours
        .user
        .filter(|u| !u.is_empty())
        .ok_or(TenantError::NoUser)?;
    let database = ours
        .database
        .filter(|d| !d.is_empty())
        .ok_or(TenantError::NoDatabase)?;
    if let Some(r) = ours.replication {
        return Err(TenantError::Unsupported(format!("replication={r}")));
    }
    let mut settings = BTreeMap::new();
    let mut from_options = None;
    option_settings(ours.options.unwrap_or(""), |name, value| {
        if names_setting(name, "search_path") {
            from_options = Some(Arc::<str>::from(&*schema_from(value)));
        } else {
            settings.insert(setting_name(name), value.to_owned());
        }
    });
    let from_param = ours
        .schema_search_path
        .or(ours.search_path)
        .map(schema_from)
        .filter(|s| !s.is_empty());
    let schema: Arc<str> = match (from_param, from_options) {
        (Some(a), Some(b)) if *a != *b => {
            return Err(TenantError::Conflict(a.into_owned(), b.to_string()));
        }
        (Some(a), _) => a.into(),
        (None, Some(b)) if !b.is_empty() => b,
        _ => return Err(TenantError::NoSchema),
    };
    // The rest are settings, inserted last: a startup parameter overrides the same setting
    // given in `options`.
    let mut again = Consumed::default();
    for (k, v) in params.iter() {
        if !again.take(k, v) {
            settings.insert(k.to_ascii_lowercase(), v.to_owned());
        }
    }
    Ok(ClientIdentity {
        user: user.into(),
        database: database.into(),
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

    fn identify(pairs: &[(String, String)]) -> Result<ClientIdentity, TenantError> {
        super::identify(
            &pairs
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect(),
        )
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
            assert_eq!(&*identify(&v).unwrap().schema, "t1", "{opt:?}");
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
    fn a_startup_parameter_overrides_the_same_setting_in_options() {
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("schema_search_path", "s"),
            ("options", "-c statement_timeout=1 -c work_mem=1MB"),
            ("statement_timeout", "2"),
        ]);
        let id = identify(&v).unwrap();
        assert_eq!(id.settings.get("statement_timeout").unwrap(), "2");
        assert_eq!(id.settings.get("work_mem").unwrap(), "1MB");
        for consumed in ["user", "database", "options", "schema_search_path"] {
            assert!(!id.settings.contains_key(consumed), "{consumed}");
        }
    }

    #[test]
    fn schema_search_path_wins_over_search_path_and_replication_is_refused() {
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("search_path", "b"),
            ("schema_search_path", "a"),
        ]);
        let id = identify(&v).unwrap();
        assert_eq!(&*id.schema, "a");
        assert!(!id.settings.contains_key("search_path"));
        let mut v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("schema_search_path", "a"),
        ]);
        v.extend(p(&[("replication", "database")]));
        assert_eq!(
            identify(&v),
            Err(TenantError::Unsupported("replication=database".into()))
        );
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
    fn option_words_split_on_whitespace_and_keep_escaped_characters() {
        let words: Vec<_> = option_words("  -c  a\\ b=c\\\\d\t--x=y\\").collect();
        assert_eq!(words, ["-c", "a b=c\\d", "--x=y"]);
        assert!(
            matches!(words[0], Cow::Borrowed(_)),
            "a plain word is not copied"
        );
        assert_eq!(option_words("   ").count(), 0);
        // The server splits on ASCII whitespace only (vertical tab included).
        let words: Vec<_> = option_words("-c\x0ba=b\u{a0}c").collect();
        assert_eq!(words, ["-c", "a=b\u{a0}c"]);
    }

    #[test]
    fn setting_names_from_options_are_normalised() {
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            (
                "options",
                "--Statement-Timeout=5 -cwork_mem=1MB -c X=1=2 -c",
            ),
            ("schema_search_path", "\"a\"\"b\""),
        ]);
        let id = identify(&v).unwrap();
        assert_eq!(id.settings.get("statement_timeout").unwrap(), "5");
        assert_eq!(id.settings.get("work_mem").unwrap(), "1MB");
        assert_eq!(id.settings.get("x").unwrap(), "1=2");
        assert_eq!(&*id.schema, "a\"b");
    }

    #[test]
    fn a_setting_is_recognised_in_any_spelling() {
        for name in ["search_path", "Search-Path", "SEARCH_PATH", "search-path"] {
            assert!(names_setting(name, "search_path"), "{name}");
            assert_eq!(setting_name(name), "search_path");
        }
        for name in ["search_paths", "searchpath", "search_pat", ""] {
            assert!(!names_setting(name, "search_path"), "{name}");
        }
    }

    #[test]
    fn quoted_schema_with_spaces() {
        let v = p(&[
            ("user", "u"),
            ("database", "d"),
            ("options", "-c search_path=\"My\\ Schema\""),
        ]);
        assert_eq!(&*identify(&v).unwrap().schema, "My Schema");
    }
}
