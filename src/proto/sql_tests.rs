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

#[path = "sql_reference.rs"]
mod reference;

/// Texts that probe the prefilter's word starts and the lexer's corners.
const CORNERS: &[&[u8]] = &[
    b"",
    b";",
    b" \n\t",
    b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 5;",
    b"UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 3;",
    b"INSERT INTO pgbench_history (tid, bid, aid, mtime) VALUES (1, 2, 3, CURRENT_TIMESTAMP);",
    b"/* c */set role x",
    b"/* a /* nested */ still comment */ SET ROLE x",
    b"-- c\nset role x",
    b"-- c\r\nlisten x",
    b"select 1;set role x",
    b"select 1;\tSeT RoLe x",
    b"select 'set role x'",
    b"select \"set role x\"",
    b"\"SET\" role x",
    b"select 1; \"set\" search_path to x",
    b"sElEcT PG_ADVISORY_LOCK(1)",
    b"SELECT/**/pg_advisory_lock(1)",
    b"select pg_try_advisory_lock_shared(7)",
    b"select pg_catalog.pg_advisory_lock_shared(7)",
    b"select pg_catalog.\"pg_advisory_lock\"(7)",
    b"select \"pg_advisory_loc\xe2\x84\xaa\"(7)",
    b"select pg_catalog.set_config('search_path', 'x', false)",
    b"select pg_catalog.set_config('Work_Mem', '1MB', false)",
    b"select set_config($1, $2, false)",
    b"select set_config(name, 'x', false) from t where name = 'search_path'",
    b"select E'it\\'s'; set role x",
    b"select E'\\'; set role x'",
    b"select e'\\\\'; set role x",
    b"select 'it''s'; listen c",
    b"se/**/t role x",
    b"$$set role x$$",
    b"do$$begin perform set_config('work_mem','1',false);end$$",
    b"DO $body$ BEGIN PERFORM 1; SET search_path = x; END $body$",
    b"select $1; set role x",
    b"x$1 set role x",
    b"$1 set role x",
    b"1set role x",
    b"abc1set role x",
    b"select 1 set role x",
    b"\xffset role x",
    b"select 1;\xff set role x",
    b"set role \xff",
    b"select '\xff'; set role x",
    b"SET \"\xffx\" = 1",
    b"SET \"My.App\".\"X\xc3\x89\" = 1",
    b"set myapp.\"\" = 1",
    b"set local myapp.x = 1",
    b"set",
    b"set session",
    b"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    b"set time zone local; set timezone = 'UTC'",
    b"set time = 1",
    b"reset",
    b"reset role; reset session authorization; reset TimeZone",
    b"RESET myapp.x",
    b"discard plans",
    b"deallocate all; discard plans",
    b"discard all; discard temp",
    b"select * from templates where holder = 'temp' and loader = 1",
    b"declare c cursor with\nhold for select 1",
    b"declare c cursor \"WITH\" \"HOLD\" for select 1",
    b"select lastval()",
    b"select nextval('s'), currval('s')",
    b"create temporary view v as select 1",
    b"load 'auto_explain'",
    b"select * from t where load > 1",
    b"prepare q as select 1; execute q",
    b"listen x; unlisten x",
    b"select settings, setof, offset_x from reset_log",
    b"select 1\x0bset role x",
    b"select 1\x0cset role x",
    b"'unterminated set role x",
    b"\"x",
    b"/* open set role x",
    b"$$",
    b"e'\\",
    b"DO $x$BEGIN$x$ listen c",
    b"do language plpgsql 'begin perform set_config(''work_mem'', ''1MB'', false); end'",
    b"DO E'BEGIN SET ROLE admin; END'",
    b"DO 'BEGIN DO ''BEGIN SET ROLE x; END''; END'",
    b"1begin set role x",
    b"x1begin set role x",
    b"$a1bcdefghijklmnop set role x",
    b"select 12345678begin set role x",
    b"\"Begin\" set role x",
    b"select case when a then reset else 1 end",
    b"create function f() returns void language sql as $$ set role x $$",
];

#[test]
fn agrees_with_the_reference_on_corner_cases() {
    for q in CORNERS {
        assert_eq!(
            classify(q),
            reference::classify(q),
            "{}",
            String::from_utf8_lossy(q)
        );
    }
}

#[test]
fn corner_cases_answer_as_expected() {
    let pins = |q: &[u8]| classify(q).pin;
    for q in [
        &b"/* c */set role x"[..],
        b"-- c\nset role x",
        b"select 1;set role x",
        b"\"SET\" role x",
        b"sElEcT PG_ADVISORY_LOCK(1)",
        b"SELECT/**/pg_advisory_lock(1)",
        b"select pg_try_advisory_lock_shared(7)",
        b"select E'it\\'s'; set role x",
        b"$$set role x$$",
        b"1set role x",
        b"select '\xff'; set role x",
    ] {
        assert!(pins(q).is_some(), "{}", String::from_utf8_lossy(q));
    }
    for q in [
        &b""[..],
        b"select 'set role x'",
        b"select E'\\'; set role x'",
        b"se/**/t role x",
        b"\xffset role x",
        b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 5;",
    ] {
        assert_eq!(
            classify(q),
            Effects::default(),
            "{}",
            String::from_utf8_lossy(q)
        );
    }
    let fx = classify(b"select pg_catalog.set_config('search_path', 'x', false)");
    assert!(fx.search_path);
    assert_eq!(fx.pin, None);
    let fx = classify(b"SET \"\xffx\" = 1");
    assert_eq!(fx.settings, vec!["\u{fffd}x".to_owned()]);
}

#[test]
fn a_later_discard_does_not_undo_an_earlier_one() {
    let fx = classify(b"deallocate all; discard plans");
    assert!(fx.deallocate);
    let fx = classify(b"discard all; discard temp");
    assert!(fx.deallocate && fx.reset_all);
}

/// Texts glued from fragments chosen to meet at awkward places (inside quotes and comments,
/// around `$`, digits and keywords) must classify as the reference does.
#[test]
fn agrees_with_the_reference_on_generated_text() {
    // Fragments separated by `|`.
    const PARTS: &[u8] =
        b"set|SET|reset|rEsEt|role| |\n|\t|\r|\x0c|\x0b|;|'|\"|E'|\\|/*|*/|--|$$|$|$1|1|\
        x|_|.|(|)|=|search_path|set_config|Set_Config|('work_mem'|pg_advisory_lock|pg_advisory_loc|\
        pg_try_advisory_lock|pg_try_advisory_lock_shared|\xe2\x84\xaa|with|hold|Hold|temp|TEMP|\
        temporary|discard|DISCARD|all|deallocate|prepare|listen|load|currval|lastval|session|\
        local|time|zone|characteristics|UPDATE t|select|\xff|\xc3\xa9|a.b|begin|pg_catalog.|\
        application_name|work_mem|schema|do|DO |DO '|DO $$|BEGIN |then|ELSE|loop|declare|$x$|''|\
        ''''|end|\"begin\"|2begin|e$x$";
    let parts: Vec<&[u8]> = PARTS.split(|&b| b == b'|').collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut q = Vec::new();
    for _ in 0..50_000 {
        q.clear();
        let n = 1 + next() % 10;
        for _ in 0..n {
            q.extend_from_slice(parts[(next() % parts.len() as u64) as usize]);
        }
        assert_eq!(
            classify(&q),
            reference::classify(&q),
            "{}",
            String::from_utf8_lossy(&q)
        );
    }
}

/// The effects of `sql`, checked against the reference.
fn checked(sql: &str) -> Effects {
    let fx = classify(sql.as_bytes());
    assert_eq!(fx, reference::classify(sql.as_bytes()), "{sql}");
    fx
}

#[test]
fn a_command_first_in_a_procedural_block_is_seen() {
    let role = Some("SET ROLE");
    let pins = [
        ("DO $$ BEGIN SET ROLE admin; END $$", role),
        ("DO $$BEGIN IF true THEN SET ROLE x; END IF; END$$", role),
        (
            "do $$ begin if x then null; else set role x; end if; end $$",
            role,
        ),
        ("DO $$ BEGIN LOOP SET ROLE x; EXIT; END LOOP; END $$", role),
        ("DO $$ DECLARE n int; BEGIN SET ROLE x; END $$", role),
        (
            "DO $b$\nBEGIN\n  SET SESSION AUTHORIZATION u;\nEND\n$b$",
            Some("SET SESSION AUTHORIZATION"),
        ),
        ("DO $$ BEGIN /* c */ LISTEN chan; END $$", Some("LISTEN")),
        ("DO 'BEGIN SET ROLE admin; END'", role),
        ("DO LANGUAGE plpgsql 'BEGIN SET ROLE admin; END'", role),
        ("DO 'BEGIN SET ROLE admin; END' LANGUAGE plpgsql", role),
        ("DO $$ BEGIN DO 'BEGIN SET ROLE x; END'; END $$", role),
        ("BEGIN TRANSACTION; SET ROLE x", role),
    ];
    for (q, pin) in pins {
        assert!(may_have_effects(q.as_bytes()), "{q}");
        assert_eq!(checked(q).pin, pin, "{q}");
    }
    let search_path = Effects {
        search_path: true,
        ..Effects::default()
    };
    for q in [
        "do $body$ declare x int; begin set search_path = other; end $body$",
        "DO 'BEGIN SET search_path = ''other''; END'",
        "DO $$ BEGIN IF true THEN RESET search_path; END IF; END $$",
    ] {
        assert_eq!(checked(q), search_path, "{q}");
    }
    let fx = checked("DO $$ BEGIN SET work_mem = '1MB'; END $$");
    assert_eq!((fx.pin, fx.settings), (None, vec!["work_mem".to_owned()]));
    let fx = checked("DO $$ BEGIN NULL; ELSE RESET ALL; END $$");
    assert!(fx.reset_all && fx.search_path);
    let fx = checked("DO $$ BEGIN LOOP DISCARD ALL; END LOOP; END $$");
    assert!(fx.deallocate && fx.reset_all);
}

#[test]
fn transaction_blocks_and_plain_updates_stay_harmless() {
    for q in [
        "BEGIN; SET LOCAL statement_timeout = 5; COMMIT",
        "BEGIN; SET LOCAL work_mem = '1MB'",
        "BEGIN TRANSACTION; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "DO $$ BEGIN SET LOCAL work_mem = '1MB'; END $$",
        "DO $$ BEGIN UPDATE t SET x = 1; END $$",
        "select 'BEGIN SET ROLE admin; END'",
        "UPDATE t SET x = CASE WHEN a THEN 1 ELSE 2 END",
    ] {
        assert_eq!(checked(q), Effects::default(), "{q}");
    }
}

#[test]
fn string_quoted_do_bodies_nest_only_so_deep() {
    let nested = |levels: usize| {
        let mut q = "SET ROLE x".to_owned();
        for _ in 0..levels {
            q = format!("DO '{}'", q.replace('\'', "''"));
        }
        q
    };
    let deep = Some("deeply nested DO body");
    for (levels, pin) in [
        (1, Some("SET ROLE")),
        (MAX_BODY_DEPTH, Some("SET ROLE")),
        (MAX_BODY_DEPTH + 1, deep),
        (12, deep),
    ] {
        assert_eq!(checked(&nested(levels)).pin, pin, "{levels}");
    }
}
