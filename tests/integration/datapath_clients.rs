//! Real libpq clients through perseus: psql (including `\copy` both ways and NOTICEs) and
//! pgbench in simple and extended mode with more clients than server connections.

use crate::support;

use std::io::Write;
use std::process::{Output, Stdio};

use support::datapath::{Env, pool};
use support::quote_ident;
use support::tenant::TenantSpec;

/// Runs `cmd` with `stdin` as its input; panics with its output when it fails.
fn run(mut cmd: std::process::Command, stdin: &[u8], what: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: start: {e}"));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // A separate writer: psql may fill its stdout before reading all of its stdin.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: wait: {e}"));
    writer.join().expect("stdin writer");
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn psql(env: &Env, t: &TenantSpec, script: &str, what: &str) -> Output {
    let mut cmd = env.libpq_cmd("psql", t);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    run(cmd, script.as_bytes(), what)
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("psql prints UTF-8")
}

#[tokio::test]
async fn psql_copy_both_ways_and_notices() {
    const ROWS: usize = 30_000;
    let env = Env::start(&["tenant_a", "tenant_b"], pool(2)).await;
    let a = env.tenant(0).clone();
    // Big enough (about 1.5 MB each way) to need flow control in both directions.
    let data: String = (1..=ROWS)
        .map(|i| format!("{i}\trow {i} of tenant_a, padded to be a little longer\n"))
        .collect();

    let script = format!(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n\
         \\copy items (id, name) from stdin\n{data}\\.\n\
         SELECT count(*), sum(id), current_schema() FROM items;\n"
    );
    let out = psql(&env, &a, &script, "psql \\copy from stdin");
    let expect_sum = ROWS * (ROWS + 1) / 2;
    assert_eq!(stdout(&out).trim(), format!("{ROWS}|{expect_sum}|tenant_a"));

    // COPY TO STDOUT gives back exactly what went in.
    let out = psql(
        &env,
        &a,
        "\\copy (SELECT id, name FROM items ORDER BY id) to stdout\n",
        "psql \\copy to stdout",
    );
    assert_eq!(stdout(&out).len(), data.len());
    assert!(stdout(&out) == data, "COPY TO STDOUT differs from the data");

    // The server-side COPY statements as psql sends them in a script, with a failing row:
    // the COPY is all or nothing, and the session goes on.
    let mut cmd = env.libpq_cmd("psql", &a);
    cmd.args(["-X", "-q", "-A", "-t"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let bad = "COPY items (id, name) FROM STDIN;\n900001\tok\nnot-a-number\tbad\n\\.\n\
               SELECT count(*) FROM items;\n\
               COPY items (id, name) FROM STDIN;\n900001\tok\n900002\tok too\n\\.\n\
               SELECT count(*) FROM items;\n\
               DO $$ BEGIN RAISE NOTICE 'hello from %', current_schema(); END $$;\n";
    let mut child = cmd.spawn().expect("start psql");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(bad.as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid input syntax for type integer"),
        "stderr: {err}"
    );
    assert!(
        err.contains("NOTICE:  hello from tenant_a"),
        "stderr: {err}"
    );
    let counts: Vec<_> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        counts,
        vec![ROWS.to_string(), (ROWS + 2).to_string()],
        "stderr: {err}"
    );

    // Everything is where it belongs on the destination, and the other tenant has none of it.
    let dest = env.dest().await;
    let row = dest
        .query_one("SELECT count(*), max(id) FROM tenant_a.items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), ROWS as i64 + 2);
    assert_eq!(row.get::<_, i32>(1), 900002);
    let b_has: i64 = dest
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'tenant_b' AND tablename = 'items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_has, 0);
    let out = psql(
        &env,
        env.tenant(1),
        "SELECT current_schema(), to_regclass('items') IS NULL;\n",
        "psql as tenant_b",
    );
    assert_eq!(stdout(&out).trim(), "tenant_b|t");
}

/// The lines of pgbench's report that must be there and say there were no failures.
fn check_pgbench_report(out: &Output, expected: usize, what: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    let processed = format!("number of transactions actually processed: {expected}/{expected}");
    assert!(
        text.contains(&processed),
        "{what}: expected {processed:?} in:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .unwrap_or_else(|| panic!("{what}: no failed-transactions line in:\n{text}"));
    assert!(
        failed.starts_with("0 "),
        "{what}: failed transactions: {failed}"
    );
}

/// TPC-B invariants after a run from a fresh `pgbench -i`: every transaction added the same
/// delta to one account, teller and branch and logged it in history, so the sums agree and
/// a lost update shows up as a difference.
async fn check_pgbench_invariants(env: &Env, schema: &str, expected: usize) {
    let dest = env.dest_super().await;
    let s = quote_ident(schema);
    let row = dest
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {s}.pgbench_history), \
                        (SELECT coalesce(sum(delta), 0) FROM {s}.pgbench_history)::bigint, \
                        (SELECT sum(abalance) FROM {s}.pgbench_accounts)::bigint, \
                        (SELECT sum(tbalance) FROM {s}.pgbench_tellers)::bigint, \
                        (SELECT sum(bbalance) FROM {s}.pgbench_branches)::bigint"
            ),
            &[],
        )
        .await
        .unwrap();
    let (history, delta, accounts, tellers, branches): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(history, expected as i64, "{schema}: history rows");
    assert_eq!(accounts, delta, "{schema}: account balances vs history");
    assert_eq!(tellers, delta, "{schema}: teller balances vs history");
    assert_eq!(branches, delta, "{schema}: branch balances vs history");
}

/// pgbench -i straight on the destination, then `clients` pgbench clients per tenant through
/// perseus (all tenants at once) over `max_open` server connections.
async fn pgbench_through_perseus(mode: &str) {
    const MAX_OPEN: u32 = 4;
    const CLIENTS: usize = 8;
    const TXNS: usize = 40;
    let schemas = ["bench_a", "bench_b"];
    let env = Env::start(&schemas, pool(MAX_OPEN)).await;
    for schema in schemas {
        let mut init = env.dest_cmd("pgbench", schema);
        init.args(["-i", "-s", "1", "-q"]);
        run(init, b"", &format!("pgbench -i in {schema}"));
    }
    // pgbench -i's own backends may still be exiting; only perseus's may count.
    env.wait_no_backends(&env.dest_super().await).await;
    let watch = env.watch_backends().await;
    let runs: Vec<_> = env
        .tenants
        .iter()
        .map(|t| {
            let mut cmd = env.libpq_cmd("pgbench", t);
            cmd.args(["-M", mode, "-c", &CLIENTS.to_string(), "-j", "2"])
                .args(["-t", &TXNS.to_string()]);
            let what = format!("pgbench -M {mode} as {}", t.source_schema);
            tokio::task::spawn_blocking(move || run(cmd, b"", &what))
        })
        .collect();
    let mut outs: Vec<Output> = Vec::new();
    for r in runs {
        outs.push(r.await.expect("pgbench runner"));
    }
    let (max, seen) = watch.max().await;
    for (out, schema) in outs.iter().zip(schemas) {
        check_pgbench_report(out, CLIENTS * TXNS, schema);
        check_pgbench_invariants(&env, schema, CLIENTS * TXNS).await;
    }
    assert!(
        max <= MAX_OPEN as i64,
        "the destination saw {max} server connections, MaxOpen is {MAX_OPEN}:\n{}",
        seen.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_protocol() {
    pgbench_through_perseus("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_protocol() {
    pgbench_through_perseus("extended").await;
}

/// Named prepared statements (issue 7): pgbench -M prepared keeps its statements for the
/// whole session while its transactions move between server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_protocol() {
    pgbench_through_perseus("prepared").await;
}
