//! The console's little language (PgBouncer's vocabulary at tenant granularity), parsed from
//! query text with no I/O: keywords are case-insensitive, a trailing semicolon is fine, and a
//! tenant is written `db/schema` with either part double-quoted when it needs to be.

use crate::session::registry::TenantKey;

/// What the console understands, for error messages and help.
pub const COMMANDS: &str = "SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, SHOW TENANTS, SHOW STATS, \
     SHOW CONFIG, SHOW VERSION, RELOAD, PAUSE [db/schema], RESUME [db/schema], KILL db/schema";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Clients,
    Servers,
    Tenants,
    Stats,
    Config,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    /// None pauses every tenant.
    Pause(Option<TenantKey>),
    /// None resumes every tenant.
    Resume(Option<TenantKey>),
    Kill(TenantKey),
}

impl Command {
    /// The CommandComplete tag, as PgBouncer spells it.
    pub fn tag(&self) -> &'static str {
        match self {
            Command::Show(_) => "SHOW",
            Command::Reload => "RELOAD",
            Command::Pause(_) => "PAUSE",
            Command::Resume(_) => "RESUME",
            Command::Kill(_) => "KILL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown admin command \"{0}\"; the admin console understands: {COMMANDS}")]
    Unknown(String),
    #[error("{0}; the admin console understands: {COMMANDS}")]
    Syntax(String),
}

impl CommandError {
    /// 42601 (syntax_error) for text that is not a command at all, 0A000 (feature_not_supported)
    /// for a known verb used in a way the console does not offer.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CommandError::Unknown(_) => "42601",
            CommandError::Syntax(_) => "0A000",
        }
    }
}

/// Splits query text into statements on semicolons outside double quotes; blank ones vanish.
pub fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in sql.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Splits off the first whitespace-separated word.
fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

pub fn parse(stmt: &str) -> Result<Command, CommandError> {
    let (verb, rest) = first_word(stmt);
    let shown = || stmt.trim().to_owned();
    match verb.to_ascii_uppercase().as_str() {
        "SHOW" => {
            let (what, extra) = first_word(rest);
            if !extra.is_empty() {
                return Err(CommandError::Syntax(format!(
                    "SHOW takes one word, got \"{rest}\""
                )));
            }
            let show = match what.to_ascii_uppercase().as_str() {
                "POOLS" => Show::Pools,
                "CLIENTS" => Show::Clients,
                "SERVERS" => Show::Servers,
                "TENANTS" => Show::Tenants,
                "STATS" => Show::Stats,
                "CONFIG" => Show::Config,
                "VERSION" => Show::Version,
                _ => return Err(CommandError::Syntax(format!("cannot SHOW \"{what}\""))),
            };
            Ok(Command::Show(show))
        }
        "RELOAD" if rest.is_empty() => Ok(Command::Reload),
        "RELOAD" => Err(CommandError::Syntax("RELOAD takes no argument".into())),
        "PAUSE" => Ok(Command::Pause(optional_tenant(rest)?)),
        "RESUME" => Ok(Command::Resume(optional_tenant(rest)?)),
        "KILL" => match optional_tenant(rest)? {
            Some(t) => Ok(Command::Kill(t)),
            None => Err(CommandError::Syntax(
                "KILL needs a tenant: KILL db/schema".into(),
            )),
        },
        _ => Err(CommandError::Unknown(shown())),
    }
}

fn optional_tenant(arg: &str) -> Result<Option<TenantKey>, CommandError> {
    if arg.is_empty() {
        return Ok(None);
    }
    tenant(arg).map(Some).ok_or_else(|| {
        CommandError::Syntax(format!(
            "\"{arg}\" is not a tenant; write db/schema, double-quoting a part that contains / or \""
        ))
    })
}

/// `db/schema`, each part either bare (taken as written) or double-quoted with `""` for `"`.
fn tenant(arg: &str) -> Option<TenantKey> {
    let (db, rest) = part(arg, true)?;
    let rest = rest.trim_start().strip_prefix('/')?;
    let (schema, rest) = part(rest, false)?;
    if !rest.trim().is_empty() || db.is_empty() || schema.is_empty() {
        return None;
    }
    Some((db, schema))
}

/// One tenant part and what follows it. A bare first part ends at `/`; a bare last part runs
/// to the end.
fn part(s: &str, first: bool) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if let Some((_, '"')) = chars.peek() {
                    chars.next();
                    out.push('"');
                } else {
                    return Some((out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    if first {
        let end = s.find('/')?;
        Some((s[..end].trim_end().to_owned(), &s[end..]))
    } else {
        Some((s.trim_end().to_owned(), ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, schema: &str) -> TenantKey {
        (db.into(), schema.into())
    }

    #[test]
    fn keywords_any_case() {
        assert_eq!(parse("show pools"), Ok(Command::Show(Show::Pools)));
        assert_eq!(parse("  Show   Clients "), Ok(Command::Show(Show::Clients)));
        assert_eq!(parse("SHOW VERSION"), Ok(Command::Show(Show::Version)));
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(parse("RESUME"), Ok(Command::Resume(None)));
    }

    #[test]
    fn tenants() {
        assert_eq!(
            parse("PAUSE mm/tenant_a"),
            Ok(Command::Pause(Some(t("mm", "tenant_a"))))
        );
        assert_eq!(
            parse("kill mm/\"Tenant B\""),
            Ok(Command::Kill(t("mm", "Tenant B")))
        );
        assert_eq!(
            parse("resume \"a/b\"/\"x\"\"y\""),
            Ok(Command::Resume(Some(t("a/b", "x\"y"))))
        );
        assert_eq!(
            parse("KILL mm / Tenant B"),
            Ok(Command::Kill(t("mm", "Tenant B")))
        );
    }

    #[test]
    fn statements_split_outside_quotes() {
        assert_eq!(statements("SHOW POOLS;"), vec!["SHOW POOLS"]);
        assert_eq!(
            statements("pause mm/\"a;b\"; show tenants ;;"),
            vec!["pause mm/\"a;b\"", "show tenants"]
        );
        assert!(statements("  ; ").is_empty());
    }

    #[test]
    fn errors_list_the_commands() {
        let e = parse("SELECT 1").unwrap_err();
        assert_eq!(e.sqlstate(), "42601");
        assert!(e.to_string().contains("SHOW POOLS"), "{e}");
        assert!(e.to_string().contains("KILL db/schema"), "{e}");
        for bad in [
            "SHOW",
            "SHOW FOO",
            "SHOW POOLS x",
            "KILL",
            "KILL mm",
            "PAUSE mm/",
            "PAUSE /s",
            "PAUSE mm/\"s",
            "PAUSE mm/\"s\" x",
            "RELOAD now",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.sqlstate(), "0A000", "{bad}");
            assert!(e.to_string().contains("RESUME [db/schema]"), "{bad}: {e}");
        }
    }
}
