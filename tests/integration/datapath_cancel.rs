//! CancelRequest through perseus: the key perseus gave a client cancels that client's query on
//! whichever server connection runs it; any other key is ignored.

use crate::support;

use std::time::{Duration, Instant};

use support::datapath::{Env, db_error, pool};
use support::wire::{Key, Wire, cancel_request, tags};
use tokio_postgres::{Client, NoTls};

/// Waits until a backend of the destination role runs a query containing `marker`.
async fn wait_running(env: &Env, observer: &Client, marker: &str) {
    env.wait_backend(observer, "active", marker).await;
}

/// Sends a CancelRequest to perseus and waits until perseus has dealt with it (it closes
/// the connection when done).
async fn send_cancel(port: u16, key: Key) {
    let mut w = Wire::connect(port).await;
    w.send(&cancel_request(key)).await;
    assert!(w.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_pg_sleep_and_the_session_goes_on() {
    let env = Env::start(&["tenant_a"], pool(2)).await;
    let observer = env.dest_super().await;
    let client = env.connect(env.tenant(0)).await;
    let token = client.cancel_token();

    for (round, sql) in [
        "SELECT pg_sleep(30) /* simple */",
        "SELECT pg_sleep($1) /* extended */",
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let query = async {
            if round == 0 {
                client.simple_query(sql).await.map(|_| ())
            } else {
                client.query(sql, &[&30f64]).await.map(|_| ())
            }
        };
        let cancel = async {
            wait_running(&env, &observer, sql.split("/*").nth(1).unwrap()).await;
            token.cancel_query(NoTls).await.expect("send the cancel");
        };
        tokio::pin!(query);
        let result = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                // Without this branch a query that fails at once would show only as the
                // cancel's wait for it timing out.
                r = &mut query => panic!("{sql} ended before it was cancelled: {r:?}"),
                () = cancel => query.await,
            }
        })
        .await
        .expect("the cancelled query returns");
        let e = result.expect_err("pg_sleep(30) was cancelled");
        assert_eq!(db_error(&e).0, "57014", "{sql}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{sql}: cancel took {:?}",
            started.elapsed()
        );
        // The session is usable right away, and nothing is left running on the server.
        let v: i32 = client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
        assert_eq!(v, 42);
        assert!(
            env.server_backends(&observer)
                .await
                .iter()
                .all(|(_, state, q)| !(state == "active" && q.contains("pg_sleep"))),
            "pg_sleep still running after the cancel"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_only_its_own_client() {
    let env = Env::start(&["tenant_a"], pool(3)).await;
    let observer = env.dest_super().await;
    let victim = env.connect(env.tenant(0)).await;
    let bystander = env.connect(env.tenant(0)).await;
    let token = victim.cancel_token();

    let victim_query = victim.simple_query("SELECT pg_sleep(30) /* victim */");
    let bystander_query = bystander.simple_query("SELECT pg_sleep(3) /* bystander */");
    let cancel = async {
        wait_running(&env, &observer, "victim").await;
        wait_running(&env, &observer, "bystander").await;
        token.cancel_query(NoTls).await.expect("send the cancel");
    };
    let (v, b, ()) = tokio::time::timeout(Duration::from_secs(25), async {
        futures::join!(victim_query, bystander_query, cancel)
    })
    .await
    .expect("both queries return");
    let e = v.expect_err("the victim's query was cancelled");
    assert_eq!(db_error(&e).0, "57014", "{e}");
    b.expect("the bystander's query was not cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cancel_keys_are_ignored() {
    let env = Env::start(&["tenant_a"], pool(2)).await;
    let observer = env.dest_super().await;
    let a = env.tenant(0);
    let port = env.perseus.port();
    let mut w = Wire::connect(port).await;
    let key = w.login_tenant(a).await;

    // A cancel while the client is idle does nothing to its next query.
    send_cancel(port, key).await;
    assert_eq!(tags(&w.query("SELECT 1").await), "TDCZ");

    // While a query runs: made-up keys, and the right pid with the wrong secret.
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT pg_sleep(5) /* wrong keys */", &mut buf)
        .unwrap();
    w.send(&buf).await;
    wait_running(&env, &observer, "wrong keys").await;
    for bogus in [
        Key {
            pid: key.pid ^ 0x5a5a,
            secret: key.secret,
        },
        Key {
            pid: key.pid,
            secret: key.secret.wrapping_add(1),
        },
        Key {
            pid: rand_i32(),
            secret: rand_i32(),
        },
    ] {
        send_cancel(port, bogus).await;
    }
    assert!(
        env.server_backends(&observer)
            .await
            .iter()
            .any(|(_, state, q)| state == "active" && q.contains("wrong keys")),
        "the query stopped although every cancel key was wrong"
    );
    let msgs = w.until_ready().await;
    assert_eq!(
        tags(&msgs),
        "TDCZ",
        "the query must finish normally: {msgs:?}"
    );

    // The right key still works afterwards.
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT pg_sleep(30) /* right key */", &mut buf)
        .unwrap();
    w.send(&buf).await;
    wait_running(&env, &observer, "right key").await;
    send_cancel(port, key).await;
    let msgs = w.until_ready().await;
    let err = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("no error after the cancel: {}", tags(&msgs)));
    assert_eq!(err.code(), "57014");

    // perseus keeps serving everyone.
    let client = env.connect(a).await;
    let v: i32 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    assert_eq!(tags(&w.query("SELECT 1").await), "TDCZ");
}

fn rand_i32() -> i32 {
    // Time-seeded is enough: the point is a key perseus never issued.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    (nanos as i32) | 0x4000_0000
}

/// Runs `query`, cancelling it every 50 ms until it returns (at most 20 s). A cancel that
/// comes before the query is queued is ignored, as there is nothing to cancel yet.
async fn cancel_until_done<T>(
    token: &tokio_postgres::CancelToken,
    query: impl std::future::Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    tokio::pin!(query);
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::select! {
                r = &mut query => break r,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    token.cancel_query(NoTls).await.expect("send the cancel");
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_still_queued_for_a_connection_can_be_cancelled() {
    // One server connection, held by an open transaction: the waiter's query queues.
    let env = Env::start(&["tenant_a"], pool(1)).await;
    let holder = env.connect(env.tenant(0)).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = env.connect(env.tenant(0)).await;
    let token = waiter.cancel_token();
    let started = Instant::now();
    let result = cancel_until_done(
        &token,
        waiter.simple_query("SELECT 'never ran' /* queued */"),
    )
    .await
    .expect("the queued query returns once cancelled, long before WaitTimeoutSecs (60 s)");
    let e = result.expect_err("the queued query was cancelled");
    assert_eq!(db_error(&e).0, "57014", "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The holder's transaction is untouched, and the waiter's session goes on once the
    // connection is free.
    let v: i32 = holder.query_one("SELECT 40 + 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    holder.batch_execute("COMMIT").await.unwrap();
    let rows = waiter
        .simple_query("SELECT 'ran' /* after */")
        .await
        .unwrap();
    assert!(
        rows.iter().any(|m| matches!(m,
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("ran"))),
        "the waiter's next query runs"
    );
    // The extended protocol too: a whole Parse ... Sync batch is refused as one.
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let result = cancel_until_done(
        &token,
        waiter.query_one("SELECT $1::int + 1 /* queued extended */", &[&1i32]),
    )
    .await
    .expect("the queued extended query returns once cancelled");
    let e = result.expect_err("the queued extended query was cancelled");
    assert_eq!(db_error(&e).0, "57014", "{e}");
    holder.batch_execute("COMMIT").await.unwrap();
    let v: i32 = waiter
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
}
