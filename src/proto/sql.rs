//! A conservative look at client SQL text: does it change search_path, or create session state
//! that must not leak to the next user of a pooled server connection?
//!
//! This is not a parser. It lexes enough (comments, quotes, dollar quotes) to find statement
//! boundaries and keywords, and when in doubt it answers "pin", because a wrong "no" leaks one
//! tenant's session into another's. It runs on every Query and Parse, so most text is answered
//! by one pass over its bytes (`sql_prefilter`), and the lexer borrows the text instead of
//! allocating. Procedural code is read as statements too: the body of a DO block (dollar- or
//! single-quoted) is lexed as code, and a statement may begin after the words and delimiters
//! that end a PL/pgSQL control clause, so `DO $$ BEGIN SET ROLE x; END $$` is seen.

use super::sql_prefilter::{WORD_CONT, WORD_START, class, is_lower, may_have_effects, opens_block};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A bare word; compared ASCII-case-insensitively, as the server folds it.
    Word(&'a [u8]),
    /// A double-quoted identifier; compared as if lower-cased, which sees more keywords than
    /// the server (it keeps the case), so it errs toward "pin".
    Quoted(&'a [u8]),
    /// A single-quoted string, raw (escapes and doubled quotes left in).
    Str(&'a [u8]),
    Punct(u8),
}

/// Tokens of the text, borrowed from it; cloning it is how the classifier looks ahead.
#[derive(Clone)]
struct Lexer<'a> {
    sql: &'a [u8],
    i: usize,
    /// A dollar-quote delimiter (`$$`, `$tag$`) came between the previous token and the one
    /// last returned: a procedural body may begin there.
    after_dollar: bool,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Lexer {
            sql,
            i: 0,
            after_dollar: false,
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        let sql = self.sql;
        let mut i = self.i;
        let mut after_dollar = false;
        let tok = loop {
            let Some(&c) = sql.get(i) else {
                self.i = i;
                self.after_dollar = after_dollar;
                return None;
            };
            match c {
                b'-' if sql.get(i + 1) == Some(&b'-') => {
                    i = sql[i..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(sql.len(), |n| i + n);
                }
                b'/' if sql.get(i + 1) == Some(&b'*') => i = block_comment_end(sql, i),
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
                    i += 1;
                    break Tok::Str(text);
                }
                b'"' => {
                    let start = i + 1;
                    i += 1;
                    while i < sql.len() && sql[i] != b'"' {
                        i += 1;
                    }
                    let text = &sql[start.min(sql.len())..i.min(sql.len())];
                    i += 1;
                    break Tok::Quoted(text);
                }
                // Dollar-quote delimiters are dropped and the body lexed as code, so a DO block
                // or function body that sets session state is still seen.
                b'$' => {
                    i += 1;
                    while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                        i += 1;
                    }
                    if sql.get(i) == Some(&b'$') {
                        i += 1;
                        after_dollar = true;
                    }
                }
                c if class(c) & WORD_START != 0 => {
                    let start = i;
                    i += 1;
                    while i < sql.len() && class(sql[i]) & WORD_CONT != 0 {
                        i += 1;
                    }
                    break Tok::Word(&sql[start..i]);
                }
                c if c.is_ascii_whitespace() || c.is_ascii_digit() => i += 1,
                c => {
                    i += 1;
                    break Tok::Punct(c);
                }
            }
        };
        self.i = i;
        self.after_dollar = after_dollar;
        Some(tok)
    }
}

/// Where a (nested) block comment starting at `sql[i]` ends.
fn block_comment_end(sql: &[u8], mut i: usize) -> usize {
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
    i
}

/// The words the classifier reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    Set,
    Reset,
    Discard,
    Deallocate,
    Prepare,
    Listen,
    Load,
    /// DO: a string constant in its statement is a procedural body.
    Do,
    Temp,
    With,
    Hold,
    AdvisoryLock,
    SeqValue,
    SetConfig,
    SearchPath,
    Local,
    Session,
    Schema,
    Transaction,
    Constraints,
    Role,
    Authorization,
    Characteristics,
    Time,
    Zone,
    All,
    /// A parameter whose changes the server reports with ParameterStatus, so the pooler
    /// tracks it without help.
    Reported,
}

fn keyword(t: Tok<'_>) -> Option<Kw> {
    match t {
        Tok::Word(w) => lookup(w),
        Tok::Quoted(q) if q.is_ascii() => lookup(q),
        Tok::Quoted(q) => lookup(lower(q).as_bytes()),
        _ => None,
    }
}

fn kw(t: Option<Tok<'_>>) -> Option<Kw> {
    t.and_then(keyword)
}

fn lookup(w: &[u8]) -> Option<Kw> {
    use Kw::*;
    let same_letter: &[(&[u8], Kw)] = match w.first()? | 0x20 {
        b'a' => &[
            (b"all", All),
            (b"authorization", Authorization),
            (b"application_name", Reported),
        ],
        b'c' => &[
            (b"currval", SeqValue),
            (b"constraints", Constraints),
            (b"characteristics", Characteristics),
            (b"client_encoding", Reported),
        ],
        b'd' => &[
            (b"discard", Discard),
            (b"deallocate", Deallocate),
            (b"do", Do),
            (b"datestyle", Reported),
        ],
        b'h' => &[(b"hold", Hold)],
        b'i' => &[(b"intervalstyle", Reported)],
        b'l' => &[
            (b"listen", Listen),
            (b"load", Load),
            (b"lastval", SeqValue),
            (b"local", Local),
        ],
        b'p' => &[
            (b"prepare", Prepare),
            (b"pg_advisory_lock", AdvisoryLock),
            (b"pg_advisory_lock_shared", AdvisoryLock),
            (b"pg_try_advisory_lock", AdvisoryLock),
            (b"pg_try_advisory_lock_shared", AdvisoryLock),
        ],
        b'r' => &[(b"reset", Reset), (b"role", Role)],
        b's' => &[
            (b"set", Set),
            (b"set_config", SetConfig),
            (b"search_path", SearchPath),
            (b"session", Session),
            (b"schema", Schema),
            (b"standard_conforming_strings", Reported),
        ],
        b't' => &[
            (b"temp", Temp),
            (b"temporary", Temp),
            (b"transaction", Transaction),
            (b"time", Time),
            (b"timezone", Reported),
        ],
        b'w' => &[(b"with", With)],
        b'z' => &[(b"zone", Zone)],
        _ => return None,
    };
    same_letter
        .iter()
        .find(|(k, _)| is_lower(w, k))
        .map(|&(_, kw)| kw)
}

/// Quoted text lower-cased the way identifiers and setting names are compared.
fn lower(text: &[u8]) -> String {
    String::from_utf8_lossy(text).to_lowercase()
}

/// Whether string or quoted text, lower-cased, is `w` (lower-case ASCII).
fn text_is(text: &[u8], w: &str) -> bool {
    if text.is_ascii() {
        is_lower(text, w.as_bytes())
    } else {
        lower(text) == w
    }
}

/// A parameter name: the word `first`, or dotted words for custom settings (`app.user`),
/// the dots and further words read from `rest`.
fn setting_name(first: Option<Tok<'_>>, mut rest: Lexer<'_>) -> Option<String> {
    let mut name = String::new();
    push_name_part(&mut name, first)?;
    while rest.clone().next() == Some(Tok::Punct(b'.')) {
        rest.next();
        name.push('.');
        push_name_part(&mut name, rest.next())?;
    }
    Some(name)
}

fn push_name_part(name: &mut String, t: Option<Tok<'_>>) -> Option<()> {
    match t? {
        Tok::Word(w) => {
            let start = name.len();
            name.push_str(&String::from_utf8_lossy(w));
            name[start..].make_ascii_lowercase();
        }
        Tok::Quoted(q) if !q.is_empty() => name.push_str(&lower(q)),
        _ => return None,
    }
    Some(())
}

/// The rest of a SET statement, after `SET`.
fn classify_set(mut rest: Lexer<'_>, fx: &mut Effects) {
    let first = rest.next();
    let first_kw = kw(first);
    let local = first_kw == Some(Kw::Local);
    let (name, name_kw) = match first_kw {
        Some(Kw::Local | Kw::Session) => {
            let name = rest.next();
            (name, kw(name))
        }
        _ => (first, first_kw),
    };
    let after = || kw(rest.clone().next());
    match name_kw {
        Some(Kw::SearchPath | Kw::Schema) => fx.search_path = true,
        Some(Kw::Transaction | Kw::Constraints) => {}
        Some(Kw::Role) => fx.pin = Some("SET ROLE"),
        Some(Kw::Authorization) => fx.pin = Some("SET SESSION AUTHORIZATION"),
        Some(Kw::Characteristics) => fx.pin = Some("SET SESSION CHARACTERISTICS"),
        Some(Kw::Session) if after() == Some(Kw::Characteristics) => {
            fx.pin = Some("SET SESSION CHARACTERISTICS")
        }
        Some(Kw::Session) => fx.pin = Some("SET SESSION AUTHORIZATION"),
        Some(Kw::Time) if after() == Some(Kw::Zone) => {}
        Some(Kw::Reported) => {}
        _ if local => {}
        _ => match setting_name(name, rest) {
            Some(n) => fx.settings.push(n),
            None => fx.pin = Some("session-level SET"),
        },
    }
}

/// The rest of a RESET statement, after `RESET`.
fn classify_reset(mut rest: Lexer<'_>, fx: &mut Effects) {
    let name = rest.next();
    match kw(name) {
        Some(Kw::All) => {
            fx.search_path = true;
            fx.reset_all = true;
        }
        Some(Kw::SearchPath) => fx.search_path = true,
        Some(Kw::Role | Kw::Session | Kw::Reported) => {}
        _ => match setting_name(name, rest) {
            Some(n) => fx.settings.push(n),
            None => fx.search_path = true,
        },
    }
}

/// Where a DO body quoted as a string nests more DO bodies than this, the classifier pins instead
/// of looking further. Each level doubles the quotes of the next, so real text never gets close.
const MAX_BODY_DEPTH: usize = 8;

/// Whether a statement may begin after `t` (see `opens_block`).
fn opens_block_tok(t: Tok<'_>) -> bool {
    match t {
        Tok::Word(w) => opens_block(w),
        Tok::Quoted(q) if q.is_ascii() => opens_block(q),
        Tok::Quoted(q) => opens_block(lower(q).as_bytes()),
        _ => false,
    }
}

/// The command a statement begins with: `k` is its first word, `rest` the tokens after it.
fn classify_command(k: Option<Kw>, mut rest: Lexer<'_>, fx: &mut Effects) {
    match k {
        Some(Kw::Set) => classify_set(rest, fx),
        Some(Kw::Reset) => classify_reset(rest, fx),
        Some(Kw::Discard) => {
            fx.search_path = true;
            // Or-ed, not assigned: a later `DISCARD PLANS` does not bring back what an earlier
            // statement of the same text dropped.
            let all = kw(rest.next()) == Some(Kw::All);
            fx.deallocate |= all;
            fx.reset_all |= all;
        }
        Some(Kw::Deallocate) => fx.deallocate = true,
        Some(Kw::Prepare) => fx.pin = Some("SQL PREPARE"),
        Some(Kw::Listen) => fx.pin = Some("LISTEN"),
        Some(Kw::Load) => fx.pin = Some("LOAD"),
        _ => {}
    }
}

/// A DO body written as a string constant (`DO 'BEGIN ... END'`) is classified as code, the
/// way a dollar-quoted body is lexed in place; doubled quotes in it stand for one.
fn classify_quoted_body(text: &[u8], fx: &mut Effects, depth: usize) {
    if depth >= MAX_BODY_DEPTH {
        fx.pin = Some("deeply nested DO body");
        return;
    }
    let unquoted;
    let body = if text.contains(&b'\'') {
        unquoted = undouble_quotes(text);
        &unquoted[..]
    } else {
        text
    };
    let mut lx = Lexer::new(body);
    while classify_statement(&mut lx, fx, depth + 1) {}
}

/// `text` with each `''` made `'`.
fn undouble_quotes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        out.push(b);
        i += if b == b'\'' && text.get(i + 1) == Some(&b'\'') {
            2
        } else {
            1
        };
    }
    out
}

/// Classifies the statement `lx` is at and moves past it; false when the text has ended.
/// `depth` counts the string-quoted DO bodies the statement is inside.
fn classify_statement(lx: &mut Lexer<'_>, fx: &mut Effects, depth: usize) -> bool {
    // A set_config whose name is not a literal is harmless only if the statement names
    // search_path somewhere (the pooler re-reads it); decided once the statement has ended.
    let mut names_search_path = false;
    let mut unnamed_set_config = false;
    // Whether a command may begin at the next token: at the start, and after a word that ends
    // a PL/pgSQL control clause.
    let mut may_begin = true;
    let mut prev = None;
    // A DO began where a command may: its string constants are bodies.
    let mut in_do = false;
    let more = loop {
        let Some(t) = lx.next() else {
            break false;
        };
        let k = keyword(t);
        if may_begin || lx.after_dollar {
            classify_command(k, lx.clone(), fx);
            in_do |= k == Some(Kw::Do);
        }
        match t {
            Tok::Punct(b';') => break true,
            Tok::Word(_) | Tok::Quoted(_) => match k {
                Some(Kw::Temp) => fx.pin = Some("temporary table"),
                Some(Kw::Hold) if prev == Some(Kw::With) => fx.pin = Some("DECLARE ... WITH HOLD"),
                Some(Kw::AdvisoryLock) => fx.pin = Some("session advisory lock"),
                Some(Kw::SeqValue) => fx.pin = Some("currval()/lastval()"),
                Some(Kw::SetConfig) => {
                    fx.search_path = true;
                    let mut ahead = lx.clone();
                    match (ahead.next(), ahead.next()) {
                        (Some(Tok::Punct(b'(')), Some(Tok::Str(name))) => {
                            if !text_is(name, "search_path") {
                                fx.settings.push(lower(name));
                            }
                        }
                        _ => unnamed_set_config = true,
                    }
                }
                Some(Kw::SearchPath) => names_search_path = true,
                _ => {}
            },
            Tok::Str(s) => {
                names_search_path |= text_is(s, "search_path");
                if in_do {
                    classify_quoted_body(s, fx, depth);
                }
            }
            _ => {}
        }
        may_begin = opens_block_tok(t);
        prev = k;
    };
    if unnamed_set_config && !names_search_path {
        fx.pin = Some("set_config()");
    }
    more
}

/// Classifies a Query or Parse text (possibly several statements).
pub fn classify(sql: &[u8]) -> Effects {
    let mut fx = Effects::default();
    if may_have_effects(sql) {
        let mut lx = Lexer::new(sql);
        while classify_statement(&mut lx, &mut fx, 0) {}
    }
    fx
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
