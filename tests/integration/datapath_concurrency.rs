//! Many tokio-postgres clients over a pool smaller than the client count: simple and extended
//! protocol, pipelined requests, transactions that must stay on one server connection.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::datapath::{Env, pool, simple_rows};
use support::quote_ident;

const MAX_OPEN: u32 = 5;

/// Creates `log(client, seq, note)` in every tenant schema, straight on the destination.
async fn create_log_tables(env: &Env) {
    let dest = env.dest().await;
    for t in &env.tenants {
        dest.batch_execute(&format!(
            "CREATE TABLE {}.log (client int NOT NULL, seq int NOT NULL, note text)",
            quote_ident(&t.source_schema)
        ))
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_clients_share_five_server_connections() {
    const CLIENTS: usize = 40;
    const ROUNDS: i32 = 30;
    let env = Arc::new(Env::start(&["tenant_a", "Tenant B"], pool(MAX_OPEN)).await);
    create_log_tables(&env).await;
    let watch = env.watch_backends().await;

    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let env = env.clone();
        workers.push(tokio::spawn(async move {
            let tenant = env.tenant(c % 2).clone();
            let schema = tenant.source_schema.clone();
            let client = env.connect(&tenant).await;
            let id = c as i32;
            let mut inserted = 0i64;
            for seq in 0..ROUNDS {
                let x = id * 1000 + seq;
                match seq % 3 {
                    0 => {
                        let row = client
                            .query_one(
                                "SELECT $1::int * 2, current_schema(), $2::text",
                                &[&x, &format!("c{c}")],
                            )
                            .await
                            .unwrap();
                        assert_eq!(row.get::<_, i32>(0), x * 2);
                        assert_eq!(row.get::<_, String>(1), schema);
                        assert_eq!(row.get::<_, String>(2), format!("c{c}"));
                    }
                    1 => {
                        let rows = simple_rows(
                            &client
                                .simple_query(&format!(
                                    "SELECT {x} * 3, current_schema(), v FROM t"
                                ))
                                .await
                                .unwrap(),
                        );
                        assert_eq!(
                            rows,
                            vec![vec![
                                Some((x * 3).to_string()),
                                Some(schema.clone()),
                                Some((c % 2).to_string())
                            ]]
                        );
                    }
                    _ => {
                        let n = client
                            .execute(
                                "INSERT INTO log (client, seq, note) VALUES ($1, $2, $3)",
                                &[&id, &seq, &schema],
                            )
                            .await
                            .unwrap();
                        assert_eq!(n, 1);
                        inserted += 1;
                    }
                }
            }
            let mine: i64 = client
                .query_one("SELECT count(*) FROM log WHERE client = $1", &[&id])
                .await
                .unwrap()
                .get(0);
            assert_eq!(mine, inserted, "client {c} sees its own rows");
            inserted
        }));
    }
    let mut total = 0;
    for w in workers {
        total += tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("workers finish")
            .expect("worker succeeded");
    }
    let (max_backends, seen) = watch.max().await;
    assert!(
        max_backends <= MAX_OPEN as i64,
        "the destination saw {max_backends} server connections, MaxOpen is {MAX_OPEN}:\n{}",
        seen.join("\n")
    );
    assert!(max_backends >= 1);

    // Every insert landed in its writer's schema.
    let dest = env.dest().await;
    for (i, t) in env.tenants.iter().enumerate() {
        let row = dest
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE note <> $1 OR client % 2 <> $2) \
                     FROM {}.log",
                    quote_ident(&t.source_schema)
                ),
                &[&t.source_schema, &(i as i32)],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), total / 2, "{}", t.source_schema);
        assert_eq!(
            row.get::<_, i64>(1),
            0,
            "foreign rows in {}",
            t.source_schema
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_from_many_clients() {
    const CLIENTS: usize = 8;
    const IN_FLIGHT: i32 = 40;
    let env = Arc::new(Env::start(&["tenant_a", "tenant_b"], pool(2)).await);
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let env = env.clone();
        workers.push(tokio::spawn(async move {
            let tenant = env.tenant(c % 2).clone();
            let client = env.connect(&tenant).await;
            // Futures polled together: tokio-postgres pipelines their messages on one socket.
            for round in 0..5 {
                let extended = (0..IN_FLIGHT).map(|i| {
                    let client = &client;
                    async move {
                        let row = client
                            .query_one("SELECT $1::int + 1, (SELECT v FROM t)", &[&i])
                            .await
                            .unwrap();
                        (row.get::<_, i32>(0), row.get::<_, i32>(1))
                    }
                });
                let simple = (0..IN_FLIGHT).map(|i| {
                    let client = &client;
                    async move {
                        let rows = simple_rows(
                            &client
                                .simple_query(&format!("SELECT {i} + 2; SELECT v FROM t"))
                                .await
                                .unwrap(),
                        );
                        (rows[0][0].clone(), rows[1][0].clone())
                    }
                });
                let (ext, simp) = futures::join!(
                    futures::future::join_all(extended),
                    futures::future::join_all(simple)
                );
                for (i, got) in ext.into_iter().enumerate() {
                    assert_eq!(got, (i as i32 + 1, (c % 2) as i32), "round {round}");
                }
                for (i, got) in simp.into_iter().enumerate() {
                    assert_eq!(
                        got,
                        (Some((i + 2).to_string()), Some((c % 2).to_string())),
                        "round {round}"
                    );
                }
            }
        }));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("workers finish")
            .expect("worker succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_stay_on_one_server_connection() {
    const CLIENTS: usize = 16;
    const TXNS: i32 = 20;
    let env = Arc::new(Env::start(&["tenant_a", "tenant_b"], pool(3)).await);
    create_log_tables(&env).await;
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let env = env.clone();
        workers.push(tokio::spawn(async move {
            let tenant = env.tenant(c % 2).clone();
            let mut client = env.connect(&tenant).await;
            let id = c as i32;
            let mut committed = 0i64;
            for n in 0..TXNS {
                let tx = client.transaction().await.unwrap();
                let pid: i32 = tx
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await
                    .unwrap()
                    .get(0);
                for seq in [2 * n, 2 * n + 1] {
                    tx.execute(
                        "INSERT INTO log (client, seq) VALUES ($1, $2)",
                        &[&id, &seq],
                    )
                    .await
                    .unwrap();
                }
                // Uncommitted rows are visible only on the connection that wrote them.
                let row = tx
                    .query_one(
                        "SELECT count(*), pg_backend_pid() FROM log WHERE client = $1",
                        &[&id],
                    )
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i64>(0), committed + 2, "client {c} txn {n}");
                assert_eq!(row.get::<_, i32>(1), pid, "client {c} txn {n} moved");
                let simple =
                    simple_rows(&tx.simple_query("SELECT pg_backend_pid()").await.unwrap());
                assert_eq!(simple[0][0], Some(pid.to_string()));
                if n % 2 == 0 {
                    tx.commit().await.unwrap();
                    committed += 2;
                } else {
                    tx.rollback().await.unwrap();
                }
            }
            let after: i64 = client
                .query_one("SELECT count(*) FROM log WHERE client = $1", &[&id])
                .await
                .unwrap()
                .get(0);
            assert_eq!(after, committed, "client {c}");
        }));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("workers finish")
            .expect("worker succeeded");
    }
    let dest = env.dest().await;
    let per_client = (TXNS as i64 / 2) * 2;
    for t in &env.tenants {
        let n: i64 = dest
            .query_one(
                &format!("SELECT count(*) FROM {}.log", quote_ident(&t.source_schema)),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, per_client * (CLIENTS as i64 / 2), "{}", t.source_schema);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_connection_is_bounded() {
    let settings = perseus::config::PoolSettings {
        wait_timeout: Duration::from_secs(1),
        ..pool(1)
    };
    let env = Env::start(&["tenant_a"], settings).await;
    let holder = env.connect(env.tenant(0)).await;
    let waiter = env.connect(env.tenant(0)).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(20), waiter.simple_query("SELECT 1"))
        .await
        .expect("the wait ends")
        .expect_err("no connection is free while the holder's transaction is open");
    let waited = started.elapsed();
    let (code, message) = support::datapath::db_error(&e);
    assert!(
        code == "53300" || code == "57014",
        "SQLSTATE {code}: {message}"
    );
    assert!(
        message.contains(&env.dest_db),
        "the message should name the pool: {message:?}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "waited {waited:?} with WaitTimeoutSecs 1"
    );
    // The holder is unaffected, and once it is done others get the connection.
    holder.batch_execute("COMMIT").await.unwrap();
    let next = env.connect(env.tenant(0)).await;
    let v: i32 = next.query_one("SELECT 3", &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
}
