//! Named prepared statements in transaction mode: kept per client, prepared lazily on
//! whichever server connection a transaction lands on, never shared between tenants.

use crate::support;

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use support::datapath::{Env, pool};
use support::wire::{Msg, Wire, tags};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_sql_in_two_tenants_resolves_to_each_tenants_table() {
    // One server connection: both tenants' statements live on it side by side.
    let env = Arc::new(Env::start(&["prep_a", "prep_b"], pool(1)).await);
    let a = env.connect(env.tenant(0)).await;
    let b = env.connect(env.tenant(1)).await;
    let sa = a
        .prepare("SELECT v, current_schema() FROM t WHERE v >= $1")
        .await
        .unwrap();
    let sb = b
        .prepare("SELECT v, current_schema() FROM t WHERE v >= $1")
        .await
        .unwrap();
    for round in 0..50 {
        for (i, (client, stmt)) in [(&a, &sa), (&b, &sb)].into_iter().enumerate() {
            let rows = client.query(stmt, &[&0i32]).await.unwrap();
            assert_eq!(rows.len(), 1, "round {round}");
            assert_eq!(
                rows[0].get::<_, i32>(0),
                i as i32,
                "round {round}: wrong tenant's row"
            );
            assert_eq!(rows[0].get::<_, String>(1), env.tenant(i).source_schema);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_reuse_statements_over_a_small_pool() {
    let env = Arc::new(Env::start(&["prep_c", "prep_d"], pool(2)).await);
    let mut workers = Vec::new();
    for c in 0..12usize {
        let env = env.clone();
        workers.push(tokio::spawn(async move {
            let i = c % 2;
            let client = env.connect(env.tenant(i)).await;
            let add = client.prepare("SELECT $1::int + v FROM t").await.unwrap();
            let echo = client.prepare("SELECT $1::text").await.unwrap();
            for n in 0..40i32 {
                let row = client.query_one(&add, &[&n]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), n + i as i32);
                let s = format!("c{c}-{n}");
                let row = client.query_one(&echo, &[&s]).await.unwrap();
                assert_eq!(row.get::<_, String>(0), s);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let dest = env.dest().await;
    let backends = env.server_backends(&dest).await;
    assert!(
        backends.len() <= 2,
        "more server connections than MaxOpen: {backends:?}"
    );
}

#[tokio::test]
async fn statements_survive_a_transaction_that_failed() {
    let env = Env::start(&["prep_e"], pool(1)).await;
    let client = env.connect(env.tenant(0)).await;
    let stmt = client.prepare("SELECT 10 / $1::int").await.unwrap();
    let err = client.query_one(&stmt, &[&0i32]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    let bad = client.prepare("SELEC nonsense").await.unwrap_err();
    assert_eq!(bad.code().map(|c| c.code()), Some("42601"));
    let row = client.query_one(&stmt, &[&5i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test]
async fn max_prepared_statements_evicts_and_reprepares() {
    let mut settings = pool(1);
    settings.max_prepared_statements = 3;
    let env = Env::start(&["prep_f"], settings).await;
    let client = env.connect(env.tenant(0)).await;
    let mut stmts = Vec::new();
    for k in 0..8i32 {
        stmts.push((
            k,
            client
                .prepare(&format!("SELECT {k} + $1::int"))
                .await
                .unwrap(),
        ));
    }
    for _ in 0..3 {
        for (k, s) in &stmts {
            let row = client.query_one(s, &[&1i32]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), k + 1);
        }
    }
    let dest = env.dest_super().await;
    let prepared: i64 = dest
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            &[&env.dest_db, &env.role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(prepared, 1, "one server connection");
}

#[tokio::test]
async fn a_statement_invalidated_by_ddl_works_again_once_re_prepared() {
    let env = Env::start(&["prep_ddl"], pool(1)).await;
    let client = env.connect(env.tenant(0)).await;
    let stmt = client.prepare("SELECT * FROM t").await.unwrap();
    assert_eq!(client.query(&stmt, &[]).await.unwrap().len(), 1);
    client
        .batch_execute("ALTER TABLE t ADD COLUMN w int DEFAULT 5")
        .await
        .unwrap();
    // As on a direct connection, the old statement fails once its result type changed...
    let err = client.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    // ...and a client that prepares the same SQL again gets a fresh plan, not the stale one
    // (identical SQL shares one server statement, so the pooler must drop it).
    let again = client.prepare("SELECT * FROM t").await.unwrap();
    let rows = client.query(&again, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>("w"), 5);
}

/// Bind (text results), optional Describe of the portal, Execute, Sync of statement `stmt`.
fn run_statement(stmt: &str, describe: bool) -> BytesMut {
    let mut buf = BytesMut::new();
    let r = frontend::bind(
        "",
        stmt,
        std::iter::empty::<i16>(),
        std::iter::empty::<&str>(),
        |_: &str, _: &mut BytesMut| Ok(postgres_protocol::IsNull::No),
        std::iter::empty::<i16>(),
        &mut buf,
    );
    assert!(r.is_ok(), "encode Bind");
    if describe {
        frontend::describe(b'P', "", &mut buf).unwrap();
    }
    frontend::execute("", 0, &mut buf).unwrap();
    frontend::sync(&mut buf);
    buf
}

async fn exchange(w: &mut Wire, bytes: &[u8]) -> Vec<Msg> {
    w.send(bytes).await;
    w.until_ready().await
}

fn columns(msgs: &[Msg]) -> Vec<Option<String>> {
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a DataRow");
    row.data_row()
}

#[tokio::test]
async fn a_described_statement_invalidated_by_ddl_is_re_prepared_transparently() {
    let env = Env::start(&["prep_retry"], pool(1)).await;
    let a = env.tenant(0);
    let mut w = Wire::connect(env.perseus.port()).await;
    w.login_tenant(a).await;
    let mut buf = BytesMut::new();
    frontend::parse("s1", "SELECT * FROM t", std::iter::empty(), &mut buf).unwrap();
    frontend::sync(&mut buf);
    assert_eq!(tags(&exchange(&mut w, &buf).await), "1Z");
    let got = exchange(&mut w, &run_statement("s1", true)).await;
    assert_eq!(tags(&got), "2TDCZ");
    assert_eq!(columns(&got), vec![Some("0".to_owned())]);

    // Outside a transaction, with the portal described (pgx, psycopg and JDBC do): the client
    // gets the new shape and the new rows, never the error.
    assert!(tags(&w.query("ALTER TABLE t ADD COLUMN w int DEFAULT 5").await).ends_with("CZ"));
    let got = exchange(&mut w, &run_statement("s1", true)).await;
    assert_eq!(tags(&got), "2TDCZ", "{got:?}");
    assert_eq!(
        columns(&got),
        vec![Some("0".to_owned()), Some("5".to_owned())]
    );

    // Inside an explicit transaction the failure is the client's to see, as on a direct
    // connection (the transaction is aborted either way).
    assert!(tags(&w.query("ALTER TABLE t ADD COLUMN x int DEFAULT 6").await).ends_with("CZ"));
    assert!(tags(&w.query("BEGIN").await).ends_with("CZ"));
    let got = exchange(&mut w, &run_statement("s1", true)).await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(got[0].code(), "0A000", "{}", got[0].message());
    assert!(tags(&w.query("ROLLBACK").await).ends_with("CZ"));
    let got = exchange(&mut w, &run_statement("s1", true)).await;
    assert_eq!(columns(&got).len(), 3, "prepared again after the rollback");

    // Without a Describe the client would decode new rows with the old shape: it gets the
    // error, and the statement is prepared afresh the next time it runs.
    assert!(tags(&w.query("ALTER TABLE t ADD COLUMN y int DEFAULT 7").await).ends_with("CZ"));
    let got = exchange(&mut w, &run_statement("s1", false)).await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(got[0].code(), "0A000", "{}", got[0].message());
    let got = exchange(&mut w, &run_statement("s1", true)).await;
    assert_eq!(tags(&got), "2TDCZ", "{got:?}");
    assert_eq!(columns(&got).len(), 4);
}
