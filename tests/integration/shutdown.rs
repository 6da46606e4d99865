//! Shutdown against real PostgreSQL: SIGTERM lets a transaction in flight commit, tells idle
//! clients 57P01 at once and exits 0; ShutdownTimeoutSecs bounds a stuck transaction; SIGINT
//! and a second SIGTERM do not wait.

use crate::support;

use std::time::{Duration, Instant};

use support::daemon::{assert_running, wait_log};
use support::datapath::{Env, SETTLE, pool};
use support::{poll_async, port_accepts, quote_ident, quote_literal};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// A client whose connection task is kept, so what ends it (an unsolicited 57P01 FATAL, or
/// the socket closing) can be inspected.
struct Watched {
    client: Client,
    conn: JoinHandle<Result<(), tokio_postgres::Error>>,
}

async fn connect(env: &Env, i: usize) -> Watched {
    let (client, conn) = env
        .client_config(env.tenant(i))
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through perseus: {e}\n{}", env.perseus.log()));
    Watched {
        client,
        conn: tokio::spawn(conn),
    }
}

/// A client of tenant `i` inside an open transaction that has logged `note`.
async fn connect_in_transaction(env: &Env, i: usize, note: &str) -> Watched {
    let watched = connect(env, i).await;
    watched
        .client
        .batch_execute(&format!(
            "BEGIN; INSERT INTO log VALUES ({})",
            quote_literal(note)
        ))
        .await
        .unwrap_or_else(|e| panic!("open a transaction logging {note:?}: {e}"));
    watched
}

impl Watched {
    /// Waits for the session to end and returns the SQLSTATE it ended with, if any.
    async fn ended_with(self) -> Option<String> {
        let res = tokio::time::timeout(SETTLE, self.conn)
            .await
            .expect("the session did not end")
            .expect("connection task");
        res.err()
            .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned()))
    }
}

/// The data-path fixture with ShutdownTimeoutSecs = `grace_secs` and a `log` table per tenant.
async fn start(schemas: &[&str], grace_secs: u64) -> Env {
    let env = Env::start_with(schemas, |config| {
        config.pool = pool(2);
        config.shutdown_timeout = Duration::from_secs(grace_secs);
    })
    .await;
    let owner = env.dest().await;
    for t in &env.tenants {
        owner
            .batch_execute(&format!(
                "CREATE TABLE {}.log (note text)",
                quote_ident(&t.source_schema)
            ))
            .await
            .expect("create the log table");
    }
    env
}

async fn logged(env: &Env, schema: &str, note: &str) -> i64 {
    env.dest()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.log WHERE note = $1",
                quote_ident(schema)
            ),
            &[&note],
        )
        .await
        .expect("count log rows")
        .get(0)
}

/// Sends `signal` and waits at most `wait` for perseus to exit (panicking with `what` if it
/// does not) with a success status; returns how long that took.
fn signal_until_exit(env: &mut Env, signal: i32, wait: Duration, what: &str) -> Duration {
    let sent = Instant::now();
    env.perseus.send_signal(signal);
    let status = env.perseus.wait_exit(wait).expect(what);
    assert!(status.success(), "exit status {status}");
    sent.elapsed()
}

#[tokio::test]
async fn sigterm_lets_the_transaction_in_flight_commit_tells_idle_clients_and_exits_0() {
    let mut env = start(&["sd_a", "sd_b"], 30).await;
    let busy = connect_in_transaction(&env, 0, "in flight").await;
    let idle = connect(&env, 1).await;
    let port = env.perseus.port();

    env.perseus.send_signal(libc::SIGTERM);
    // The idle client is told at once, with the shutdown SQLSTATE.
    let told = Instant::now();
    assert_eq!(idle.ended_with().await.as_deref(), Some("57P01"));
    assert!(
        told.elapsed() < Duration::from_secs(5),
        "took {:?}",
        told.elapsed()
    );
    // No new clients.
    let closed = poll_async(SETTLE, Duration::from_millis(20), || async {
        (!port_accepts(port)).then_some(())
    })
    .await;
    assert!(closed.is_some(), "still accepting after SIGTERM");

    // The transaction in flight goes on and commits.
    busy.client
        .batch_execute("INSERT INTO log VALUES ('in flight, later')")
        .await
        .expect("a statement inside the open transaction after SIGTERM");
    busy.client
        .batch_execute("COMMIT")
        .await
        .expect("COMMIT after SIGTERM");
    assert_eq!(logged(&env, "sd_a", "in flight").await, 1);
    assert_eq!(logged(&env, "sd_a", "in flight, later").await, 1);
    // Then the session ends with 57P01; a next statement fails.
    let next = busy.client.batch_execute("SELECT 1").await;
    assert!(
        next.is_err(),
        "a statement after the last transaction was served"
    );
    assert_eq!(busy.ended_with().await.as_deref(), Some("57P01"));

    let status = env
        .perseus
        .wait_exit(Duration::from_secs(10))
        .expect("perseus exits once its last transaction is done");
    assert!(status.success(), "exit status {status}");
    // Every server connection was closed.
    let observer = env.dest_super().await;
    env.wait_no_backends(&observer).await;
    let log = env.perseus.log();
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test]
async fn shutdown_timeout_bounds_a_stuck_transaction() {
    let mut env = start(&["st_a"], 2).await;
    let stuck = connect_in_transaction(&env, 0, "never committed").await;
    // Also a statement that would run far past the grace period.
    let Watched { client, conn } = stuck;
    let sleeper = tokio::spawn(async move {
        let r = client.batch_execute("SELECT pg_sleep(60)").await;
        (client, r)
    });
    let observer = env.dest_super().await;
    env.wait_backend(&observer, "active", "pg_sleep(60)").await;

    let took = signal_until_exit(
        &mut env,
        libc::SIGTERM,
        Duration::from_secs(15),
        "perseus exits after ShutdownTimeoutSecs",
    );
    assert!(
        took >= Duration::from_millis(1500),
        "exited after {took:?}, before the 2 s grace period"
    );
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} with a 2 s grace period"
    );

    let (_client, r) = tokio::time::timeout(SETTLE, sleeper)
        .await
        .expect("the stuck statement ends")
        .unwrap();
    assert!(r.is_err(), "pg_sleep(60) finished despite the shutdown");
    let ended = tokio::time::timeout(SETTLE, conn).await.unwrap().unwrap();
    if let Some(db) = ended.as_ref().err().and_then(|e| e.as_db_error()) {
        assert_eq!(db.code().code(), "57P01", "{db:?}");
    }
    // The transaction was rolled back and its server connection closed.
    env.wait_no_backends(&observer).await;
    assert_eq!(logged(&env, "st_a", "never committed").await, 0);
    assert!(env.perseus.log().contains("grace period over"));
}

#[tokio::test]
async fn sigint_exits_at_once_even_with_a_transaction_open() {
    let mut env = start(&["si_a"], 30).await;
    let open = connect_in_transaction(&env, 0, "interrupted").await;
    let took = signal_until_exit(
        &mut env,
        libc::SIGINT,
        Duration::from_secs(10),
        "perseus exits on SIGINT",
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGINT took {took:?} (grace is 30 s)"
    );
    let code = open.ended_with().await;
    assert!(
        code.is_none() || code.as_deref() == Some("57P01"),
        "ended with {code:?}"
    );
    let observer = env.dest_super().await;
    env.wait_no_backends(&observer).await;
    assert_eq!(logged(&env, "si_a", "interrupted").await, 0);
}

#[tokio::test]
async fn a_second_sigterm_means_now() {
    let mut env = start(&["s2_a"], 30).await;
    let open = connect_in_transaction(&env, 0, "second signal").await;
    env.perseus.send_signal(libc::SIGTERM);
    // The first signal waits for the transaction; make sure it is being waited on.
    assert!(wait_log(&env.perseus, "shutting down").await);
    assert_running(&mut env.perseus, "did not wait for the transaction");
    let took = signal_until_exit(
        &mut env,
        libc::SIGTERM,
        Duration::from_secs(10),
        "perseus exits on the second SIGTERM",
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(env.perseus.log().contains("second signal"));
    assert_eq!(logged(&env, "s2_a", "second signal").await, 0);
    drop(open);
}
