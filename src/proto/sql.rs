//! A conservative look at client SQL text: does it change search_path, or create session state
//! that must not leak to the next user of a pooled server connection?
//!
//! This is not a parser. It lexes enough (comments, quotes, dollar quotes) to find statement
//! boundaries and keywords, and when in doubt it answers "pin", because a wrong "no" leaks one
//! tenant's session into another's.

/// What a piece of SQL may do to the session it runs on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// The server's search_path may no longer be the tenant's schema.
    pub search_path: bool,
    /// The session now holds state that cannot be moved to another server connection.
    pub pin: Option<&'static str>,
    /// Server-side prepared statements may be gone (DEALLOCATE, DISCARD ALL).
    pub deallocate: bool,
    /// Session settings (lower-case names) the statement may change; the pooler reads their
    /// values back after the transaction and replays them for this client only.
    pub settings: Vec<String>,
    /// RESET ALL / DISCARD ALL: every session setting is back to its default.
    pub reset_all: bool,
}

/// Parameters whose changes the server reports with ParameterStatus, so the pooler tracks them.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
];

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(u8),
}

fn lex(sql: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i];
        match c {
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < sql.len() {
                    if sql[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if sql[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                let escapes = i > 0 && matches!(sql[i - 1], b'e' | b'E');
                let start = i + 1;
                i += 1;
                let mut text = Vec::new();
                while i < sql.len() {
                    if escapes && sql[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if sql[i] == b'\'' {
                        if sql.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                text.extend_from_slice(&sql[start.min(sql.len())..i.min(sql.len())]);
                toks.push(Tok::Str(String::from_utf8_lossy(&text).to_lowercase()));
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < sql.len() && sql[i] != b'"' {
                    i += 1;
                }
                let word = &sql[start.min(sql.len())..i.min(sql.len())];
                toks.push(Tok::Word(String::from_utf8_lossy(word).to_lowercase()));
                i += 1;
            }
            // Dollar-quote delimiters are dropped and the body lexed as code, so a DO block or
            // function body that sets session state is still seen.
            b'$' => {
                i += 1;
                while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                    i += 1;
                }
                if sql.get(i) == Some(&b'$') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < sql.len()
                    && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] >= 0x80)
                {
                    i += 1;
                }
                toks.push(Tok::Word(
                    String::from_utf8_lossy(&sql[start..i]).to_ascii_lowercase(),
                ));
            }
            c if c.is_ascii_whitespace() || c.is_ascii_digit() => i += 1,
            c => {
                toks.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    toks
}

fn word(t: Option<&Tok>) -> &str {
    match t {
        Some(Tok::Word(w)) => w,
        _ => "",
    }
}

fn classify_set(rest: &[Tok], fx: &mut Effects) {
    let mut i = 0;
    let local = word(rest.first()) == "local";
    if matches!(word(rest.first()), "local" | "session") {
        i = 1;
    }
    let name = word(rest.get(i));
    match name {
        "search_path" | "schema" => fx.search_path = true,
        "transaction" | "constraints" => {}
        "role" => fx.pin = Some("SET ROLE"),
        "authorization" => fx.pin = Some("SET SESSION AUTHORIZATION"),
        "characteristics" => fx.pin = Some("SET SESSION CHARACTERISTICS"),
        "session" if word(rest.get(i + 1)) == "characteristics" => {
            fx.pin = Some("SET SESSION CHARACTERISTICS")
        }
        "session" => fx.pin = Some("SET SESSION AUTHORIZATION"),
        "time" if word(rest.get(i + 1)) == "zone" => {}
        n if REPORTED.contains(&n) => {}
        _ if local => {}
        _ => match setting_name(rest, i) {
            Some(n) => fx.settings.push(n),
            None => fx.pin = Some("session-level SET"),
        },
    }
}

/// A parameter name at `rest[i]`: a word, or dotted words for custom settings (`app.user`).
fn setting_name(rest: &[Tok], mut i: usize) -> Option<String> {
    let mut name = word(rest.get(i)).to_owned();
    if name.is_empty() {
        return None;
    }
    while rest.get(i + 1) == Some(&Tok::Punct(b'.')) {
        let next = word(rest.get(i + 2));
        if next.is_empty() {
            return None;
        }
        name.push('.');
        name.push_str(next);
        i += 2;
    }
    Some(name)
}

fn classify_statement(st: &[Tok], fx: &mut Effects) {
    match word(st.first()) {
        "set" => classify_set(&st[1..], fx),
        "reset" => match word(st.get(1)) {
            "all" => {
                fx.search_path = true;
                fx.reset_all = true;
            }
            "search_path" => fx.search_path = true,
            "role" | "session" => {}
            n if REPORTED.contains(&n) => {}
            _ => match setting_name(st, 1) {
                Some(n) => fx.settings.push(n),
                None => fx.search_path = true,
            },
        },
        "discard" => {
            fx.search_path = true;
            fx.deallocate = word(st.get(1)) == "all";
            fx.reset_all = fx.deallocate;
        }
        "deallocate" => fx.deallocate = true,
        "prepare" => fx.pin = Some("SQL PREPARE"),
        "listen" => fx.pin = Some("LISTEN"),
        "load" => fx.pin = Some("LOAD"),
        _ => {}
    }
    let mut names_search_path = false;
    let mut set_config_targets: Vec<Option<String>> = Vec::new();
    for (i, t) in st.iter().enumerate() {
        match t {
            Tok::Word(w) => match w.as_str() {
                "temp" | "temporary" => fx.pin = Some("temporary table"),
                "hold" if i > 0 && word(st.get(i - 1)) == "with" => {
                    fx.pin = Some("DECLARE ... WITH HOLD")
                }
                "pg_advisory_lock"
                | "pg_advisory_lock_shared"
                | "pg_try_advisory_lock"
                | "pg_try_advisory_lock_shared" => fx.pin = Some("session advisory lock"),
                "currval" | "lastval" => fx.pin = Some("currval()/lastval()"),
                "set_config" => {
                    let target = match (st.get(i + 1), st.get(i + 2)) {
                        (Some(Tok::Punct(b'(')), Some(Tok::Str(name))) => Some(name.clone()),
                        _ => None,
                    };
                    set_config_targets.push(target);
                }
                "search_path" => names_search_path = true,
                _ => {}
            },
            Tok::Str(s) if s == "search_path" => names_search_path = true,
            _ => {}
        }
    }
    for target in set_config_targets {
        fx.search_path = true;
        match target {
            Some(name) if name == "search_path" => {}
            Some(name) => fx.settings.push(name),
            None if names_search_path => {}
            None => fx.pin = Some("set_config()"),
        }
    }
}

/// Whether the text contains a word that every statement with a session effect contains
/// (set, discard, deallocate, prepare, listen, load, temp, hold, advisory, currval,
/// lastval). Most queries contain none and are answered without lexing; one pass, keyed by
/// the first letter, because this runs for every Query and Parse.
fn may_have_effects(sql: &[u8]) -> bool {
    let at = |i: usize, w: &[u8]| {
        sql.get(i..i + w.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
    };
    (0..sql.len()).any(|i| match sql[i] | 0x20 {
        b's' => at(i, b"set"),
        b'd' => at(i, b"discard") || at(i, b"deallocate"),
        b'p' => at(i, b"prepare"),
        b'l' => at(i, b"listen") || at(i, b"load") || at(i, b"lastval"),
        b't' => at(i, b"temp"),
        b'h' => at(i, b"hold"),
        b'a' => at(i, b"advisory"),
        b'c' => at(i, b"currval"),
        _ => false,
    })
}

/// Classifies a Query or Parse text (possibly several statements).
pub fn classify(sql: &[u8]) -> Effects {
    if !may_have_effects(sql) {
        return Effects::default();
    }
    let toks = lex(sql);
    let mut fx = Effects::default();
    for st in toks.split(|t| *t == Tok::Punct(b';')) {
        classify_statement(st, &mut fx);
    }
    fx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(sql: &str) -> Option<&'static str> {
        classify(sql.as_bytes()).pin
    }

    #[test]
    fn plain_queries_are_harmless() {
        for q in [
            "select * from t where a = 'temp'",
            "UPDATE t SET x = 1 WHERE id = $1",
            "select 1 offset 5",
            "BEGIN; SET LOCAL statement_timeout = 5; COMMIT",
            "SET application_name = 'x'",
            "SET TIME ZONE 'UTC'",
            "select pg_advisory_xact_lock(1)",
            "-- set role x\nselect 1",
        ] {
            assert_eq!(classify(q.as_bytes()), Effects::default(), "{q}");
        }
    }

    #[test]
    fn search_path_changes_are_seen() {
        for q in [
            "SET search_path TO other",
            "set SESSION Search_Path = a,b",
            "RESET ALL",
            "discard all",
            "select set_config('search_path', 'x', false)",
            "SET \"search_path\" TO x",
        ] {
            assert!(classify(q.as_bytes()).search_path, "{q}");
        }
        assert_eq!(pin("select set_config('search_path', 'x', false)"), None);
    }

    #[test]
    fn session_state_pins() {
        for q in [
            "PREPARE p AS select 1",
            "listen chan",
            "DECLARE c CURSOR WITH HOLD FOR select 1",
            "create temp table t (a int)",
            "CREATE TEMPORARY TABLE t (a int)",
            "select pg_advisory_lock(42)",
            "select currval('s')",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION bob",
            "select set_config(current_user, '1', false)",
        ] {
            assert!(pin(q).is_some(), "{q}");
        }
    }

    #[test]
    fn replayable_settings_are_named() {
        for (q, name) in [
            ("SET statement_timeout = 100", "statement_timeout"),
            ("set session work_mem to '1MB'", "work_mem"),
            ("SET myapp.tenant_id = 7", "myapp.tenant_id"),
            (
                "select set_config('Statement_Timeout', '1', false)",
                "statement_timeout",
            ),
            (
                "DO $$ BEGIN PERFORM set_config('work_mem', '1MB', false); END $$",
                "work_mem",
            ),
            ("select 1; set work_mem = '1MB'", "work_mem"),
            ("RESET lock_timeout", "lock_timeout"),
        ] {
            let fx = classify(q.as_bytes());
            assert_eq!(fx.pin, None, "{q}");
            assert_eq!(fx.settings, vec![name.to_owned()], "{q}");
        }
        assert!(classify(b"RESET ALL").reset_all);
        assert!(classify(b"discard all").reset_all);
    }

    #[test]
    fn lexer_survives_garbage() {
        for q in [
            "'unterminated",
            "\"x",
            "/* open",
            "$$",
            "e'\\",
            "\u{ff}set role",
        ] {
            let _ = classify(q.as_bytes());
        }
    }
}
