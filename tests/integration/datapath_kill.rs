//! Clients that vanish mid-transaction (dropped socket, Terminate, killed psql, half-sent
//! COPY) never leave their transaction on a pooled server connection, and what they wrote is
//! not committed.

use crate::support;

use std::io::Write;
use std::process::Stdio;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use support::datapath::{Env, pool};
use support::wire::Wire;
use tokio_postgres::{Client, NoTls};

async fn env_with_table() -> Env {
    let env = Env::start(&["tenant_a"], pool(2)).await;
    env.dest()
        .await
        .batch_execute("CREATE TABLE tenant_a.k (x int NOT NULL)")
        .await
        .unwrap();
    env
}

/// After a client vanished: nothing of it is left in a transaction on the destination, its
/// rows are gone, and perseus serves the next client on clean connections.
async fn check_aftermath(env: &Env, observer: &Client, what: &str) {
    env.wait_no_open_transactions(observer).await;
    let n: i64 = observer
        .query_one("SELECT count(*) FROM tenant_a.k", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "{what}: the vanished client's insert was committed");

    // Use every pooled connection: each must be outside any transaction, so a write through
    // perseus is committed at once and visible from outside.
    let clients = [
        env.connect(env.tenant(0)).await,
        env.connect(env.tenant(0)).await,
    ];
    let mut txns = Vec::new();
    for c in &clients {
        c.batch_execute("BEGIN").await.unwrap();
        let row = c.query_one("SELECT count(*) FROM k", &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 0, "{what}: a leftover row is visible");
        txns.push(c);
    }
    for c in txns {
        c.batch_execute("INSERT INTO k VALUES (99); COMMIT")
            .await
            .unwrap();
    }
    let n: i64 = observer
        .query_one("SELECT count(*) FROM tenant_a.k WHERE x = 99", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 2,
        "{what}: writes after the vanished client were not committed"
    );
    observer
        .batch_execute("DELETE FROM tenant_a.k")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_socket_mid_transaction() {
    let env = env_with_table().await;
    let observer = env.dest_super().await;
    for (what, sql) in [
        ("idle in transaction", "BEGIN; INSERT INTO k VALUES (1)"),
        (
            "failed transaction",
            "BEGIN; INSERT INTO k VALUES (1); SELECT 1/0",
        ),
    ] {
        let (client, conn) = env
            .client_config(env.tenant(0))
            .connect(NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let _ = client.batch_execute(sql).await;
        env.wait_backend(
            &observer,
            if what == "failed transaction" {
                "idle in transaction (aborted)"
            } else {
                "idle in transaction"
            },
            "INSERT INTO k",
        )
        .await;
        // Dropping the connection task closes the socket without a Terminate.
        conn.abort();
        let _ = conn.await;
        drop(client);
        check_aftermath(&env, &observer, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_mid_transaction() {
    let env = env_with_table().await;
    let observer = env.dest_super().await;
    let (client, conn) = env
        .client_config(env.tenant(0))
        .connect(NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    client
        .batch_execute("BEGIN; INSERT INTO k VALUES (2)")
        .await
        .unwrap();
    env.wait_backend(&observer, "idle in transaction", "INSERT INTO k")
        .await;
    // Dropping the client makes tokio-postgres send Terminate and close.
    drop(client);
    tokio::time::timeout(support::datapath::SETTLE, conn)
        .await
        .expect("the connection ends after Terminate")
        .unwrap()
        .unwrap();
    check_aftermath(&env, &observer, "Terminate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_psql_mid_transaction() {
    let env = env_with_table().await;
    let observer = env.dest_super().await;
    let mut cmd = env.libpq_cmd("psql", env.tenant(0));
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut psql = cmd.spawn().expect("start psql");
    let mut stdin = psql.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"BEGIN;\nINSERT INTO k VALUES (3);\n")
        .unwrap();
    stdin.flush().unwrap();
    env.wait_backend(&observer, "idle in transaction", "INSERT INTO k")
        .await;
    psql.kill().expect("kill psql by its pid");
    psql.wait().expect("reap psql");
    drop(stdin);
    check_aftermath(&env, &observer, "killed psql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_during_copy_from_stdin() {
    let env = env_with_table().await;
    let observer = env.dest_super().await;
    let a = env.tenant(0);
    let mut w = Wire::connect(env.perseus.port()).await;
    w.login_tenant(a).await;
    let mut buf = BytesMut::new();
    frontend::query("COPY k (x) FROM STDIN", &mut buf).unwrap();
    w.send(&buf).await;
    let m = w.recv().await.expect("CopyInResponse");
    assert_eq!(m.tag, b'G', "{m:?}");
    let mut buf = BytesMut::new();
    frontend::CopyData::new(&b"5\n6\n"[..])
        .unwrap()
        .write(&mut buf);
    w.send(&buf).await;
    env.wait_backend(&observer, "active", "COPY k").await;
    drop(w);
    check_aftermath(&env, &observer, "COPY interrupted").await;
}
