//! A server backend killed mid-transaction (pg_terminate_backend by a superuser) fails only
//! the transaction that was on it: other clients' transactions commit, the pool does not hand
//! the dead connection out again, the victim is told why (the server's 57P01, then 08006), and
//! it can log in again and carry on.

use crate::support;

use std::time::Duration;

use support::datapath::{Env, db_error, pool};
use tokio_postgres::Client;

/// Bound on any one statement: a hang fails the test instead of stalling it.
const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// Opens a transaction that writes `tag` into k and reports the server backend it runs on.
async fn open_transaction(c: &Client, tag: &str) -> i32 {
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.execute("INSERT INTO k VALUES ($1)", &[&tag])
        .await
        .expect("INSERT");
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0)
}

async fn setup() -> Env {
    let env = Env::start(&["killed_a", "killed_b"], pool(3)).await;
    let dest = env.dest().await;
    for s in ["killed_a", "killed_b"] {
        dest.batch_execute(&format!("CREATE TABLE {s}.k (tag text NOT NULL)"))
            .await
            .expect("create k");
    }
    env
}

async fn tags(env: &Env, schema: &str) -> Vec<String> {
    let mut v: Vec<String> = env
        .dest()
        .await
        .query(&format!("SELECT tag FROM {schema}.k"), &[])
        .await
        .expect("read k")
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

async fn terminate(env: &Env, pid: i32) {
    let killed: bool = env
        .dest_super()
        .await
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("pg_terminate_backend")
        .get(0);
    assert!(killed, "backend {pid} was not there to terminate");
}

#[tokio::test]
async fn killing_a_backend_idle_in_transaction_fails_only_that_transaction() {
    let env = setup().await;
    let (a, b) = (env.tenant(0).clone(), env.tenant(1).clone());
    let victim = env.connect(&a).await;
    let bystander_a = env.connect(&a).await;
    let bystander_b = env.connect(&b).await;

    let victim_pid = open_transaction(&victim, "victim").await;
    let pid_a = open_transaction(&bystander_a, "a-kept").await;
    let pid_b = open_transaction(&bystander_b, "b-kept").await;
    assert_ne!(victim_pid, pid_a);
    assert_ne!(victim_pid, pid_b);

    terminate(&env, victim_pid).await;

    // The victim's transaction fails, with an error rather than a hang.
    let e = bounded(
        "the victim's next statement",
        victim.execute("INSERT INTO k VALUES ('late')", &[]),
    )
    .await
    .expect_err("a statement on a terminated backend succeeded");
    // The server's FATAL reaches the client unasked while it is idle in the transaction;
    // tokio-postgres then reports the connection closed (a raw client reads the error itself:
    // see `the_killed_client_is_told_why`).
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            assert!(
                code.starts_with("08") || code == "57P01",
                "unexpected SQLSTATE {code}: {}",
                db.message()
            );
        }
        None => assert!(e.is_closed(), "unexpected error: {e:?}"),
    }

    // The others commit as if nothing happened, on the backends they had.
    for (c, pid) in [(&bystander_a, pid_a), (&bystander_b, pid_b)] {
        let still: i32 = bounded(
            "a bystander's statement",
            c.query_one("SELECT pg_backend_pid()", &[]),
        )
        .await
        .expect("a bystander's transaction was disturbed")
        .get(0);
        assert_eq!(still, pid);
        bounded("COMMIT", c.batch_execute("COMMIT"))
            .await
            .expect("a bystander's COMMIT failed");
    }
    assert_eq!(tags(&env, "killed_a").await, vec!["a-kept"]);
    assert_eq!(tags(&env, "killed_b").await, vec!["b-kept"]);

    // More transactions than the pool has connections: none lands on the dead backend.
    for i in 0..10 {
        for c in [&bystander_a, &bystander_b] {
            let pid: i32 = bounded(
                "a later transaction",
                c.query_one("SELECT pg_backend_pid()", &[]),
            )
            .await
            .unwrap_or_else(|e| panic!("transaction {i} after the kill failed: {e}"))
            .get(0);
            assert_ne!(pid, victim_pid, "the dead backend was handed out again");
        }
    }

    // The victim's client logs in again and works.
    let again = env.connect(&a).await;
    again
        .execute("INSERT INTO k VALUES ('after')", &[])
        .await
        .expect("insert after logging in again");
    assert_eq!(tags(&env, "killed_a").await, vec!["a-kept", "after"]);
}

#[tokio::test]
async fn killing_a_backend_mid_query_fails_only_that_query() {
    let env = setup().await;
    let a = env.tenant(0).clone();
    let victim = env.connect(&a).await;
    let bystander = env.connect(&a).await;
    let observer = env.dest_super().await;

    let running = tokio::spawn(async move {
        victim
            .simple_query("BEGIN; INSERT INTO k VALUES ('never'); SELECT pg_sleep(60); COMMIT")
            .await
    });
    env.wait_backend(&observer, "active", "pg_sleep(60)").await;
    let pid = env
        .server_backends(&observer)
        .await
        .into_iter()
        .find(|(_, _, q)| q.contains("pg_sleep(60)"))
        .map(|(pid, _, _)| pid)
        .expect("the sleeping backend");

    // A bystander is in the middle of its own transaction meanwhile.
    bystander.batch_execute("BEGIN").await.unwrap();
    bystander
        .execute("INSERT INTO k VALUES ('kept')", &[])
        .await
        .unwrap();

    terminate(&env, pid).await;
    let e = bounded("the killed query", running)
        .await
        .expect("the victim task")
        .expect_err("a query on a terminated backend succeeded");
    let (code, message) = db_error(&e);
    assert!(
        code == "57P01" || code.starts_with("08"),
        "unexpected error {code}: {message}"
    );

    bounded("COMMIT", bystander.batch_execute("COMMIT"))
        .await
        .expect("the bystander's transaction was disturbed");
    assert_eq!(tags(&env, "killed_a").await, vec!["kept"]);
    env.wait_no_open_transactions(&observer).await;
}

#[tokio::test]
async fn the_killed_client_is_told_why() {
    let env = setup().await;
    let a = env.tenant(0).clone();
    let mut w = support::wire::Wire::connect(env.perseus.port()).await;
    w.login_tenant(&a).await;
    w.query("BEGIN").await;
    let msgs = w.query("SELECT pg_backend_pid()").await;
    let pid: i32 = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| m.data_row()[0].clone())
        .expect("a pid row")
        .parse()
        .unwrap();
    terminate(&env, pid).await;
    // PostgreSQL's own FATAL is passed on, then perseus says the session is over.
    let msgs = bounded("after the kill", w.query("SELECT 1")).await;
    let errors: Vec<(String, String)> = msgs
        .iter()
        .filter(|m| m.tag == b'E')
        .map(|m| (m.code(), m.message()))
        .collect();
    assert!(
        errors.iter().any(|(c, _)| c == "57P01" || c == "08006"),
        "no ErrorResponse saying the server connection was lost: {errors:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.tag == b'D'),
        "a row came back from a dead backend"
    );
    assert!(w.closed().await);
}
