//! The reference classifier the fast one in `sql` is tested against (tests only).
//!
//! The classifier as it was before the prefilter and the lexer were made cheap: a token list
//! of owned lower-cased strings. Kept as the reference the fast one must agree with. Its
//! changes since: DISCARD or-s `deallocate` and `reset_all` instead of assigning them; a
//! command may begin after a dollar-quote delimiter or a word that ends a PL/pgSQL control
//! clause, not only first in a statement; a string after DO is classified as a body; and a
//! named set_config is recorded where it occurs, so settings keep the order of the text.

use super::Effects;

const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
];

/// Words after which a command may begin inside a procedural block.
const OPENS_BLOCK: &[&str] = &["begin", "then", "else", "loop", "do", "declare"];

const MAX_BODY_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// Lower-cased, and raw (for a DO body).
    Str(String, Vec<u8>),
    Punct(u8),
    /// A dollar-quote delimiter.
    Dollar,
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
                let text = &sql[start.min(sql.len())..i.min(sql.len())];
                let lower = String::from_utf8_lossy(text).to_lowercase();
                toks.push(Tok::Str(lower, text.to_vec()));
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
            b'$' => {
                i += 1;
                while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                    i += 1;
                }
                if sql.get(i) == Some(&b'$') {
                    i += 1;
                    toks.push(Tok::Dollar);
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < sql.len()
                    && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] >= 0x80)
                {
                    i += 1;
                }
                let w = String::from_utf8_lossy(&sql[start..i]).to_ascii_lowercase();
                toks.push(Tok::Word(w));
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
    match word(rest.get(i)) {
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

fn classify_command(st: &[Tok], fx: &mut Effects) {
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
            fx.deallocate |= word(st.get(1)) == "all";
            fx.reset_all |= word(st.get(1)) == "all";
        }
        "deallocate" => fx.deallocate = true,
        "prepare" => fx.pin = Some("SQL PREPARE"),
        "listen" => fx.pin = Some("LISTEN"),
        "load" => fx.pin = Some("LOAD"),
        _ => {}
    }
}

fn classify_statement(with_dollars: &[Tok], fx: &mut Effects, depth: usize) {
    // Where a command may begin: first, after a delimiter, after a block-opening word.
    let mut st = Vec::new();
    let mut starts = Vec::new();
    let mut start = true;
    for t in with_dollars {
        if *t == Tok::Dollar {
            start = true;
            continue;
        }
        starts.push(start);
        start = OPENS_BLOCK.contains(&word(Some(t)));
        st.push(t.clone());
    }
    let mut names_search_path = false;
    let mut unnamed_set_config = false;
    let mut in_do = false;
    for (i, t) in st.iter().enumerate() {
        if starts[i] {
            classify_command(&st[i..], fx);
            in_do |= word(Some(t)) == "do";
        }
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
                    fx.search_path = true;
                    match (st.get(i + 1), st.get(i + 2)) {
                        (Some(Tok::Punct(b'(')), Some(Tok::Str(name, _))) => {
                            if name != "search_path" {
                                fx.settings.push(name.clone());
                            }
                        }
                        _ => unnamed_set_config = true,
                    }
                }
                "search_path" => names_search_path = true,
                _ => {}
            },
            Tok::Str(s, raw) => {
                names_search_path |= s == "search_path";
                if in_do {
                    classify_body(raw, fx, depth);
                }
            }
            _ => {}
        }
    }
    if unnamed_set_config && !names_search_path {
        fx.pin = Some("set_config()");
    }
}

fn classify_body(raw: &[u8], fx: &mut Effects, depth: usize) {
    if depth >= MAX_BODY_DEPTH {
        fx.pin = Some("deeply nested DO body");
        return;
    }
    let mut body = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        body.push(raw[i]);
        i += if raw[i..].starts_with(b"''") { 2 } else { 1 };
    }
    classify_into(&body, fx, depth + 1);
}

fn classify_into(sql: &[u8], fx: &mut Effects, depth: usize) {
    for st in lex(sql).split(|t| *t == Tok::Punct(b';')) {
        classify_statement(st, fx, depth);
    }
}

pub fn classify(sql: &[u8]) -> Effects {
    let mut fx = Effects::default();
    classify_into(sql, &mut fx, 0);
    fx
}
