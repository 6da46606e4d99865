//! SIGHUP reload against real PostgreSQL: shrinking MaxOpen under load closes server
//! connections without failing a transaction, growing it releases waiting clients, and a broken
//! configuration is refused while serving goes on.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use perseus::config::Config;
use support::daemon::{assert_running, log_lines_with, wait_log, wait_log_lines_above};
use support::datapath::{Env, SETTLE, pool};
use support::poll_async;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

/// The destination role's server connections right now.
async fn backend_count(env: &Env, observer: &Client) -> usize {
    env.server_backends(observer).await.len()
}

/// True once the destination role's server connection count satisfies `ok`, polled for up
/// to [`SETTLE`].
async fn backends_reach(env: &Env, observer: &Client, ok: impl Fn(usize) -> bool) -> bool {
    poll_async(SETTLE, Duration::from_millis(20), || async {
        ok(backend_count(env, observer).await).then_some(())
    })
    .await
    .is_some()
}

/// Applies `change` to the daemon's configuration file and tells it with SIGHUP.
fn reload(env: &mut Env, change: impl FnOnce(&mut Config)) {
    change(&mut env.config);
    env.perseus.rewrite_config(&env.config);
    env.perseus.send_signal(libc::SIGHUP);
}

/// The tenant's value in its table `t`, read through `client`.
async fn select_v(client: &Client) -> Result<i32, tokio_postgres::Error> {
    client
        .query_one("SELECT v FROM t", &[])
        .await
        .map(|r| r.get::<_, i32>(0))
}

/// GET /metrics, body only.
async fn metrics(port: u16) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the metrics port");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("send the request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read the response");
        String::from_utf8(raw).expect("UTF-8 metrics")
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("metrics answer within 10 s")
}

/// The value of the first sample of `name` (with any labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Clients that run write transactions in a loop until told to stop, counting commits and
/// failures.
struct Load {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Load {
    async fn start(env: &Env, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..clients {
            let t = env.tenant(i % env.tenants.len()).clone();
            let mut client = env.connect(&t).await;
            let (stop, commits) = (stop.clone(), commits.clone());
            tasks.push(tokio::spawn(async move {
                // Bounded: far more rounds than the test's few seconds need.
                for round in 0..100_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let tx = client
                        .transaction()
                        .await
                        .map_err(|e| format!("client {i} BEGIN #{round}: {e}"))?;
                    tx.execute("INSERT INTO log (client) VALUES ($1)", &[&(i as i32)])
                        .await
                        .map_err(|e| format!("client {i} INSERT #{round}: {e}"))?;
                    // Hold the server connection a moment so the pool stays busy.
                    tx.batch_execute("SELECT pg_sleep(0.01)")
                        .await
                        .map_err(|e| format!("client {i} sleep #{round}: {e}"))?;
                    tx.commit()
                        .await
                        .map_err(|e| format!("client {i} COMMIT #{round}: {e}"))?;
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        Load {
            stop,
            commits,
            tasks,
        }
    }

    /// True once at least `commits` transactions have committed, polled for up to [`SETTLE`].
    async fn reaches(&self, commits: u64) -> bool {
        poll_async(SETTLE, Duration::from_millis(20), || async {
            (self.commits.load(Ordering::Relaxed) >= commits).then_some(())
        })
        .await
        .is_some()
    }

    /// Stops the clients; panics naming every failed transaction.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            match tokio::time::timeout(SETTLE, t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => failures.push(e),
                Ok(Err(e)) => failures.push(format!("client task panicked: {e}")),
                Err(_) => failures.push("client task did not stop".into()),
            }
        }
        assert!(failures.is_empty(), "failed transactions: {failures:#?}");
        self.commits.load(Ordering::Relaxed)
    }
}

/// The data-path fixture with MaxOpen 8 and a `log` table per tenant, and a superuser
/// connection to watch the destination with.
async fn start_with_log_tables(schemas: &[&str]) -> (Env, Client) {
    let env = Env::start(schemas, pool(8)).await;
    let owner = env.dest().await;
    for t in &env.tenants {
        owner
            .batch_execute(&format!(
                "CREATE TABLE {}.log (client int)",
                support::quote_ident(&t.source_schema)
            ))
            .await
            .expect("create the log table");
    }
    let observer = env.dest_super().await;
    (env, observer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_max_open_under_load_closes_server_connections_without_failing_transactions() {
    let (mut env, observer) = start_with_log_tables(&["rl_a", "rl_b"]).await;
    let load = Load::start(&env, 16).await;

    assert!(
        backends_reach(&env, &observer, |n| n >= 6).await,
        "load never used the pool: {} backends",
        backend_count(&env, &observer).await
    );

    let before = load.commits.load(Ordering::Relaxed);
    reload(&mut env, |c| c.pool = pool(2));

    assert!(
        backends_reach(&env, &observer, |n| n <= 2).await,
        "server connections did not shrink to 2: {:?}\n{}",
        env.server_backends(&observer).await,
        env.perseus.log()
    );
    // Once shrunk it stays shrunk while the load goes on: sample for a while.
    let watch = env.watch_backends().await;
    let progressed = load.reaches(before + 200).await;
    let (max_after, seen) = watch.max().await;
    assert!(progressed, "the load stalled after the reload");
    assert!(
        max_after <= 2,
        "{max_after} server connections after shrinking MaxOpen to 2: {seen:?}"
    );

    let commits = load.finish().await;
    // Every committed transaction landed exactly once.
    let counts = env
        .count_per_schema(&observer, &["rl_a", "rl_b"], "log")
        .await;
    assert_eq!(counts.values().sum::<i64>() as u64, commits);
    let log = env.perseus.log();
    assert!(log.contains("pool settings applied"), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[tokio::test]
async fn growing_max_open_lets_waiting_clients_proceed() {
    let mut env = Env::start(&["rg_a"], pool(1)).await;
    let t = env.tenant(0).clone();
    // Everyone logs in first (a login needs a server connection too), then one client holds
    // the only server connection in an open transaction.
    let holder = env.connect(&t).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(env.connect(&t).await);
    }
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let mut waiters = Vec::new();
    for c in clients {
        waiters.push(tokio::spawn(async move { select_v(&c).await }));
    }
    let port = env.perseus.metrics_port();
    let waiting = poll_async(SETTLE, Duration::from_millis(20), || async {
        (sample(&metrics(port).await, "perseus_client_connections_waiting") == Some(3.0))
            .then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "three clients should be waiting for the one connection"
    );
    assert!(waiters.iter().all(|w| !w.is_finished()));

    reload(&mut env, |c| c.pool = pool(4));
    for w in waiters {
        let v = tokio::time::timeout(SETTLE, w)
            .await
            .expect("a waiting client still waits after MaxOpen grew")
            .expect("waiter task")
            .expect("the waiting query succeeds");
        assert_eq!(v, 0);
    }
    // The holder's transaction was never disturbed.
    holder.batch_execute("SELECT 2; COMMIT").await.unwrap();
    let max_open = sample(&metrics(port).await, "perseus_max_open_connections");
    assert_eq!(max_open, Some(4.0));
}

#[tokio::test]
async fn a_broken_config_on_sighup_is_refused_and_serving_continues() {
    let mut env = Env::start(&["rb_a"], pool(3)).await;
    let t = env.tenant(0).clone();
    let client = env.connect(&t).await;
    let port = env.perseus.metrics_port();
    let path = env.perseus.config_path();
    let good = std::fs::read_to_string(&path).unwrap();

    // A rule broken (MaxIdle above MaxOpen), then plain bad JSON: each refused, with why.
    let mut broken: serde_json::Value = serde_json::from_str(&good).unwrap();
    broken["PoolSettings"]["MaxOpen"] = 1.into();
    broken["PoolSettings"]["MaxIdle"] = 9.into();
    for (text, why) in [
        (broken.to_string(), "MaxIdle"),
        ("{ \"PoolSettings\": ".to_string(), "EOF"),
    ] {
        let refusals = log_lines_with(&env.perseus, "keeping the running one");
        std::fs::write(&path, &text).unwrap();
        env.perseus.send_signal(libc::SIGHUP);
        let refused = wait_log_lines_above(&env.perseus, "keeping the running one", refusals).await;
        let log = env.perseus.log();
        assert!(refused, "bad config not refused:\n{log}");
        let line = log
            .lines()
            .rfind(|l| l.contains("keeping the running one"))
            .unwrap();
        assert!(line.contains(why), "the refusal does not say why: {line}");

        // Still serving: the old client, a new one, and the old pool size.
        assert_eq!(select_v(&client).await.unwrap(), 0);
        let fresh = env.connect(&t).await;
        fresh.simple_query("SELECT 1").await.unwrap();
        let max_open = sample(&metrics(port).await, "perseus_max_open_connections");
        assert_eq!(max_open, Some(3.0), "a refused config changed the pool");
    }
    assert_running(&mut env.perseus, "perseus exited");

    // A good file again applies.
    let mut fixed: serde_json::Value = serde_json::from_str(&good).unwrap();
    fixed["PoolSettings"]["MaxOpen"] = 5.into();
    std::fs::write(&path, fixed.to_string()).unwrap();
    env.perseus.send_signal(libc::SIGHUP);
    let applied = poll_async(SETTLE, Duration::from_millis(20), || async {
        (sample(&metrics(port).await, "perseus_max_open_connections") == Some(5.0)).then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "the fixed config was not applied:\n{}",
        env.perseus.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_open_shrunk_while_idle_still_caps_the_next_burst() {
    let (mut env, observer) = start_with_log_tables(&["ri_a", "ri_b"]).await;
    // A small burst opens a few server connections (fewer than MaxOpen), which then sit idle.
    let load = Load::start(&env, 4).await;
    assert!(
        backends_reach(&env, &observer, |n| n >= 3).await,
        "the burst never used the pool"
    );
    load.finish().await;

    reload(&mut env, |c| c.pool = pool(2));
    assert!(
        backends_reach(&env, &observer, |n| n <= 2).await,
        "idle connections beyond MaxOpen 2 were not closed"
    );

    // The next burst must not open more than the new MaxOpen.
    let watch = env.watch_backends().await;
    let load = Load::start(&env, 12).await;
    let progressed = load.reaches(150).await;
    let (max, seen) = watch.max().await;
    load.finish().await;
    assert!(progressed, "the second burst stalled");
    assert!(
        max <= 2,
        "{max} server connections with MaxOpen 2: {seen:?}"
    );
}

#[tokio::test]
async fn sighup_changes_the_log_level() {
    let mut env = Env::start(&["rg_log"], pool(1)).await;
    let t = env.tenant(0).clone();
    reload(&mut env, |c| c.log.level = "debug".into());
    assert!(
        wait_log(&env.perseus, "log level changed").await,
        "{}",
        env.perseus.log()
    );
    // Debug lines now appear (tokio-postgres and the pooler log at debug on a login).
    let before = log_lines_with(&env.perseus, "DEBUG");
    let c = env.connect(&t).await;
    c.simple_query("SELECT 1").await.unwrap();
    assert!(
        wait_log_lines_above(&env.perseus, "DEBUG", before).await,
        "no DEBUG lines after the level change"
    );
}
