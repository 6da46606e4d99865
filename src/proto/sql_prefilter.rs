//! The cheap first look at client SQL: most text contains no word the classifier reacts to, and
//! this answers that in one pass over its bytes, without lexing. It also holds the byte classes
//! the classifier's lexer shares, since the two must agree on where a word starts.

/// Byte classes shared by the prefilter and the lexer.
pub(super) const WORD_START: u8 = 1;
pub(super) const WORD_CONT: u8 = 2;
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

pub(super) fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

/// Whether `text`, ASCII-lower-cased, is `lower`. Unlike `eq_ignore_ascii_case`, which
/// compares in chunks, this stops at the first byte that differs: the inputs are short words
/// that mostly differ early.
pub(super) fn is_lower(text: &[u8], lower: &[u8]) -> bool {
    text.len() == lower.len()
        && text
            .iter()
            .zip(lower)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
}

/// Whether a word after `w` may begin a statement inside a procedural (PL/pgSQL) block:
/// `DO $$ BEGIN SET ROLE x; END $$` runs the SET although its statement starts with DO. The
/// classifier's lexer and this prefilter both use this list.
pub(super) fn opens_block(w: &[u8]) -> bool {
    match w.len() {
        2 => is_lower(w, b"do"),
        4 => is_lower(w, b"then") || is_lower(w, b"else") || is_lower(w, b"loop"),
        5 => is_lower(w, b"begin"),
        7 => is_lower(w, b"declare"),
        _ => false,
    }
}

/// Whether the text may contain a word the classifier reacts to. Most queries contain none
/// and are answered without lexing.
///
/// A word the lexer yields always starts where the byte before is not a letter, `_` or a
/// non-ASCII byte (a quoted identifier starts after `"`, a word after a dollar quote after
/// `$`, and digits are skipped as if they were spaces), so only those positions are tested:
/// treating digits and `$` as word breaks tests more positions than needed, never fewer. The
/// starts are found eight bytes at a time.
pub(super) fn may_have_effects(sql: &[u8]) -> bool {
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

const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Bit 7 of each byte of `x` (little-endian) set where the byte is `[A-Za-z_]` or >= 0x80.
#[inline(always)]
fn word_bytes(x: u64) -> u64 {
    let seven = x & splat(0x7f);
    let folded = seven | splat(0x20);
    // Every byte is below 0x80 before these additions, so none carries into its neighbour.
    let letter = (folded + splat(0x80 - b'a')) & !(folded + splat(0x80 - b'z' - 1));
    let underscore = !((seven ^ splat(b'_')) + splat(0x7f));
    (letter | underscore | x) & splat(0x80)
}

/// Bit 7 of each byte of `x` set where the byte is an ASCII digit.
#[inline(always)]
fn digit_bytes(x: u64) -> u64 {
    let seven = x & splat(0x7f);
    // As in `word_bytes`, no addition carries into the next byte.
    (seven + splat(0x80 - b'0')) & !(seven + splat(0x80 - b'9' - 1)) & !x & splat(0x80)
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
/// token that cannot end a control clause (see `opens_block`) certainly precedes it on the
/// same line: `UPDATE t SET ...`.
fn may_begin_statement(sql: &[u8], i: usize) -> bool {
    let mut j = i;
    // Bytes the lexer skips without a token; a newline may end a `--` comment, so stop there.
    while j > 0 && matches!(sql[j - 1], b' ' | b'\t' | b'\r' | 0x0c | b'0'..=b'9') {
        j -= 1;
    }
    if j == 0 || class(sql[j - 1]) & WORD_START == 0 {
        return true;
    }
    let end = j;
    let j = run_start(sql, end);
    // After `$` these bytes are a dollar-quote tag or parameter number, which yield no token.
    if j > 0 && sql[j - 1] == b'$' {
        return true;
    }
    // Longer than any word in `opens_block`, even without digits in front.
    if end - j > 7 && !sql[j].is_ascii_digit() {
        return false;
    }
    // The lexer skips the digits a run of word bytes starts with; the rest is its word.
    let run = &sql[j..end];
    let digits = run.iter().take_while(|b| b.is_ascii_digit()).count();
    opens_block(&run[digits..])
}

/// Where the run of word bytes (letters, digits, `_`, non-ASCII) that ends at `sql[end]`
/// begins; eight bytes at a time, since the run before a SET is mostly a table name.
fn run_start(sql: &[u8], mut end: usize) -> usize {
    while let Some(eight) = end
        .checked_sub(8)
        .and_then(|s| sql[s..end].first_chunk::<8>())
    {
        let x = u64::from_le_bytes(*eight);
        let other = !(word_bytes(x) | digit_bytes(x)) & splat(0x80);
        if other != 0 {
            // Just after the last of the eight that is not a word byte.
            return end - 8 + (63 - other.leading_zeros() as usize) / 8 + 1;
        }
        end -= 8;
    }
    while end > 0 && class(sql[end - 1]) & WORD_CONT != 0 {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::may_have_effects;

    #[test]
    fn update_set_and_plain_selects_skip_the_lexer() {
        for q in [
            &b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 5;"[..],
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            b"select * from templates where holder = 1",
            b"select pg_advisory_xact_lock(1)",
            b"UPDATE t SET x = CASE WHEN a THEN 1 ELSE 2 END",
            b"select case when a then b else c end from doings",
            b"UPDATE t SET loop = 1, x_do = 2, begin1 = 3",
        ] {
            assert!(!may_have_effects(q), "{}", String::from_utf8_lossy(q));
        }
    }

    #[test]
    fn statement_starts_are_tested() {
        for q in [
            &b"x;set role y"[..],
            b"$1 set role y",
            b"-- x\nset role y",
            b"/**/set role y",
            b"DO $$ BEGIN SET ROLE y; END $$",
            b"DO $$BEGIN IF c THEN reset role; END IF; END$$",
            b"do $t$ declare n int; begin loop listen c; end loop; end $t$",
            b"x else discard all",
            b"1begin set role y",
            b"$a1bcdefghijklmnop set role y",
            b"select 12345678begin set role y",
            b"$tag$set role y",
            b"DO 'BEGIN SET ROLE y; END'",
        ] {
            assert!(may_have_effects(q), "{}", String::from_utf8_lossy(q));
        }
    }
}
