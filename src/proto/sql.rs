//! A conservative look at client SQL text: does it change search_path, or create session state
//! that must not leak to the next user of a pooled server connection?
//!
//! This is not a parser. It lexes enough (comments, quotes, dollar quotes) to find statement
//! boundaries and keywords, and when in doubt it answers "pin", because a wrong "no" leaks one
//! tenant's session into another's. It runs on every Query and Parse, so most text is answered
//! by one pass over its bytes, and the lexer borrows the text instead of allocating.

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

/// Byte classes shared by the prefilter and the lexer.
const WORD_START: u8 = 1;
const WORD_CONT: u8 = 2;
/// First letter (either case) of a word `keyword_at` looks for.
const CANDIDATE: u8 = 4;

static CLASS: [u8; 256] = byte_classes();

const fn byte_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            t[b] |= WORD_START | WORD_CONT;
        }
        if c.is_ascii_digit() {
            t[b] |= WORD_CONT;
        }
        if c.is_ascii_alphabetic()
            && matches!(
                c.to_ascii_lowercase(),
                b'c' | b'd' | b'h' | b'l' | b'p' | b'r' | b's' | b't'
            )
        {
            t[b] |= CANDIDATE;
        }
        b += 1;
    }
    t
}

fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

/// Whether the text may contain a word the classifier reacts to. Most queries contain none
/// and are answered without lexing.
///
/// A word the lexer yields always starts where the byte before is not a letter, `_` or a
/// non-ASCII byte (a quoted identifier starts after `"`, a word after a dollar quote after
/// `$`, and digits are skipped as if they were spaces), so only those positions are tested:
/// treating digits and `$` as word breaks tests more positions than needed, never fewer. The
/// starts are found eight bytes at a time.
fn may_have_effects(sql: &[u8]) -> bool {
    let (chunks, tail) = sql.as_chunks::<8>();
    let mut before = 0;
    for (n, chunk) in chunks.iter().enumerate() {
        if keyword_in_chunk(sql, n * 8, u64::from_le_bytes(*chunk), &mut before) {
            return true;
        }
    }
    // Zero bytes pad the tail; they cannot start a word, so no position past the end is tested.
    let last = tail.iter().rev().fold(0, |x, &b| (x << 8) | u64::from(b));
    keyword_in_chunk(sql, chunks.len() * 8, last, &mut before)
}

/// Tests the word starts among the eight bytes `x` at `sql[base..]`. `before` carries, in its
/// bit 7, whether the byte before them was a word byte.
#[inline(always)]
fn keyword_in_chunk(sql: &[u8], base: usize, x: u64, before: &mut u64) -> bool {
    let word = word_bytes(x);
    let mut starts = word & !((word << 8) | *before);
    *before = word >> 56;
    while starts != 0 {
        let i = base + (starts.trailing_zeros() / 8) as usize;
        if class(sql[i]) & CANDIDATE != 0 && keyword_at(sql, i) {
            return true;
        }
        starts &= starts - 1;
    }
    false
}

/// Bit 7 of each byte of `x` (little-endian) set where the byte is `[A-Za-z_]` or >= 0x80.
#[inline(always)]
fn word_bytes(x: u64) -> u64 {
    const fn splat(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }
    let seven = x & splat(0x7f);
    let folded = seven | splat(0x20);
    // Every byte is below 0x80 before these additions, so none carries into its neighbour.
    let letter = (folded + splat(0x80 - b'a')) & !(folded + splat(0x80 - b'z' - 1));
    let underscore = !((seven ^ splat(b'_')) + splat(0x7f));
    (letter | underscore | x) & splat(0x80)
}

/// Whether a word the classifier reacts to may start at `sql[i]`. Words that only matter as
/// the first word of a statement (SET, RESET, ...) count only where a statement may begin.
fn keyword_at(sql: &[u8], i: usize) -> bool {
    let rest = &sql[i..];
    let prefix = |w: &[u8]| rest.get(..w.len()).is_some_and(|s| is_lower(s, w));
    // The lexer's word would be exactly `w`. Only the pg_*advisory_lock names contain a `k`,
    // the one letter a non-ASCII character (the Kelvin sign) lower-cases to, so every other
    // word is matched whole; those are matched by a prefix that stops before the `k`.
    let word = |w: &[u8]| {
        let end = rest.get(w.len());
        prefix(w) && end.is_none_or(|&b| class(b) & WORD_CONT == 0)
    };
    let first = || may_begin_statement(sql, i);
    // The first four bytes, case folded, pick the one or two words worth comparing in full.
    // Folding sets bit 5 of every byte, which also matches a few non-letters (`_` and 0x7f
    // fold alike): only to be compared in full.
    const fn fold(w: &[u8; 4]) -> u32 {
        u32::from_le_bytes(*w) | 0x2020_2020
    }
    let head = match rest.first_chunk::<4>() {
        Some(four) => fold(four),
        None => rest.iter().rev().fold(0, |x, &b| (x << 8) | u32::from(b)) | 0x2020_2020,
    };
    const SET_: u32 = fold(b"set_");
    const SET: u32 = fold(b"set\0") & 0x00ff_ffff;
    const RESE: u32 = fold(b"rese");
    const DISC: u32 = fold(b"disc");
    const DEAL: u32 = fold(b"deal");
    const PREP: u32 = fold(b"prep");
    const LIST: u32 = fold(b"list");
    const LOAD: u32 = fold(b"load");
    const PG_A: u32 = fold(b"pg_a");
    const PG_T: u32 = fold(b"pg_t");
    const LAST: u32 = fold(b"last");
    const TEMP: u32 = fold(b"temp");
    const HOLD: u32 = fold(b"hold");
    const CURR: u32 = fold(b"curr");
    match head {
        SET_ => prefix(b"set_config"),
        RESE => word(b"reset") && first(),
        DISC => word(b"discard") && first(),
        DEAL => word(b"deallocate") && first(),
        PREP => word(b"prepare") && first(),
        LIST => word(b"listen") && first(),
        LOAD => word(b"load") && first(),
        PG_A => prefix(b"pg_advisory_loc"),
        PG_T => prefix(b"pg_try_advisory_loc"),
        LAST => word(b"lastval"),
        TEMP => word(b"temp") || word(b"temporary"),
        HOLD => word(b"hold"),
        CURR => word(b"currval"),
        _ if head & 0x00ff_ffff == SET => word(b"set") && first(),
        _ => false,
    }
}

/// Whether a word at `sql[i]` may be the first token of a statement. "No" only when a word
/// token certainly precedes it on the same line: `UPDATE t SET ...`.
fn may_begin_statement(sql: &[u8], i: usize) -> bool {
    let mut j = i;
    // Bytes the lexer skips without a token; a newline may end a `--` comment, so stop there.
    while j > 0 && matches!(sql[j - 1], b' ' | b'\t' | b'\r' | 0x0c | b'0'..=b'9') {
        j -= 1;
    }
    if j == 0 || class(sql[j - 1]) & WORD_START == 0 {
        return true;
    }
    while j > 0 && class(sql[j - 1]) & WORD_CONT != 0 {
        j -= 1;
    }
    // After `$` these bytes are a dollar-quote tag or parameter number, which yield no token.
    j > 0 && sql[j - 1] == b'$'
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
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        let sql = self.sql;
        let mut i = self.i;
        let tok = loop {
            let Some(&c) = sql.get(i) else {
                self.i = i;
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

/// Whether `text`, ASCII-lower-cased, is `lower`. Unlike `eq_ignore_ascii_case`, which
/// compares in chunks, this stops at the first byte that differs: the inputs are short words
/// that mostly differ early.
fn is_lower(text: &[u8], lower: &[u8]) -> bool {
    text.len() == lower.len()
        && text
            .iter()
            .zip(lower)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
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

/// Classifies the statement `lx` is at and moves past it; false when the text has ended.
fn classify_statement(lx: &mut Lexer<'_>, fx: &mut Effects) -> bool {
    let mut head = lx.clone();
    match kw(head.next()) {
        Some(Kw::Set) => classify_set(head, fx),
        Some(Kw::Reset) => classify_reset(head, fx),
        Some(Kw::Discard) => {
            fx.search_path = true;
            // Or-ed, not assigned: a later `DISCARD PLANS` does not bring back what an earlier
            // statement of the same text dropped.
            let all = kw(head.next()) == Some(Kw::All);
            fx.deallocate |= all;
            fx.reset_all |= all;
        }
        Some(Kw::Deallocate) => fx.deallocate = true,
        Some(Kw::Prepare) => fx.pin = Some("SQL PREPARE"),
        Some(Kw::Listen) => fx.pin = Some("LISTEN"),
        Some(Kw::Load) => fx.pin = Some("LOAD"),
        _ => {}
    }
    // A set_config whose name is not a literal is harmless only if the statement names
    // search_path somewhere (the pooler re-reads it); decided once the statement has ended.
    let mut names_search_path = false;
    let mut unnamed_set_config = false;
    let mut prev = None;
    let more = loop {
        let Some(t) = lx.next() else {
            break false;
        };
        match t {
            Tok::Punct(b';') => break true,
            Tok::Word(_) | Tok::Quoted(_) => match keyword(t) {
                Some(Kw::Temp) => fx.pin = Some("temporary table"),
                Some(Kw::Hold) if kw(prev) == Some(Kw::With) => {
                    fx.pin = Some("DECLARE ... WITH HOLD")
                }
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
            Tok::Str(s) if text_is(s, "search_path") => names_search_path = true,
            _ => {}
        }
        prev = Some(t);
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
        let mut lx = Lexer { sql, i: 0 };
        while classify_statement(&mut lx, &mut fx) {}
    }
    fx
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
