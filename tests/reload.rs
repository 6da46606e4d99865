//! SIGHUP reload against real PostgreSQL: shrinking MaxOpen under load closes server
//! connections without failing a transaction, growing it releases waiting clients, and a broken
//! configuration is refused while serving goes on.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::datapath::{Env, SETTLE, pool};
use support::poll_async;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The destination role's server connections right now.
async fn backend_count(env: &Env, observer: &tokio_postgres::Client) -> usize {
    env.server_backends(observer).await.len()
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

async fn create_log_tables(env: &Env) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_max_open_under_load_closes_server_connections_without_failing_transactions() {
    let mut env = Env::start(&["rl_a", "rl_b"], pool(8)).await;
    create_log_tables(&env).await;
    let observer = env.dest_super().await;
    let load = Load::start(&env, 16).await;

    let grown = poll_async(SETTLE, Duration::from_millis(20), || async {
        (backend_count(&env, &observer).await >= 6).then_some(())
    })
    .await;
    assert!(
        grown.is_some(),
        "load never used the pool: {} backends",
        backend_count(&env, &observer).await
    );

    let before = load.commits.load(Ordering::Relaxed);
    env.config.pool = pool(2);
    env.perseus.rewrite_config(&env.config);
    env.perseus.send_signal(libc::SIGHUP);

    let shrunk = poll_async(SETTLE, Duration::from_millis(20), || async {
        (backend_count(&env, &observer).await <= 2).then_some(())
    })
    .await;
    assert!(
        shrunk.is_some(),
        "server connections did not shrink to 2: {:?}\n{}",
        env.server_backends(&observer).await,
        env.perseus.log()
    );
    // Once shrunk it stays shrunk while the load goes on: sample for a while.
    let watch = env.watch_backends().await;
    let progressed = poll_async(SETTLE, Duration::from_millis(20), || async {
        (load.commits.load(Ordering::Relaxed) >= before + 200).then_some(())
    })
    .await;
    let (max_after, seen) = watch.max().await;
    assert!(progressed.is_some(), "the load stalled after the reload");
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
        waiters.push(tokio::spawn(async move {
            c.query_one("SELECT v FROM t", &[])
                .await
                .map(|r| r.get::<_, i32>(0))
        }));
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

    env.config.pool = pool(4);
    env.perseus.rewrite_config(&env.config);
    env.perseus.send_signal(libc::SIGHUP);
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
        let refusals = env.perseus.log().matches("keeping the running one").count();
        std::fs::write(&path, &text).unwrap();
        env.perseus.send_signal(libc::SIGHUP);
        let refused = poll_async(SETTLE, Duration::from_millis(20), || async {
            (env.perseus.log().matches("keeping the running one").count() > refusals).then_some(())
        })
        .await;
        let log = env.perseus.log();
        assert!(refused.is_some(), "bad config not refused:\n{log}");
        let line = log
            .lines()
            .rfind(|l| l.contains("keeping the running one"))
            .unwrap();
        assert!(line.contains(why), "the refusal does not say why: {line}");

        // Still serving: the old client, a new one, and the old pool size.
        let v: i32 = client
            .query_one("SELECT v FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 0);
        let fresh = env.connect(&t).await;
        fresh.simple_query("SELECT 1").await.unwrap();
        let max_open = sample(&metrics(port).await, "perseus_max_open_connections");
        assert_eq!(max_open, Some(3.0), "a refused config changed the pool");
    }
    assert!(
        env.perseus.wait_exit(Duration::ZERO).is_none(),
        "perseus exited"
    );

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
    let mut env = Env::start(&["ri_a", "ri_b"], pool(8)).await;
    create_log_tables(&env).await;
    let observer = env.dest_super().await;
    // A small burst opens a few server connections (fewer than MaxOpen), which then sit idle.
    let load = Load::start(&env, 4).await;
    let grown = poll_async(SETTLE, Duration::from_millis(20), || async {
        (backend_count(&env, &observer).await >= 3).then_some(())
    })
    .await;
    assert!(grown.is_some(), "the burst never used the pool");
    load.finish().await;

    env.config.pool = pool(2);
    env.perseus.rewrite_config(&env.config);
    env.perseus.send_signal(libc::SIGHUP);
    let shrunk = poll_async(SETTLE, Duration::from_millis(20), || async {
        (backend_count(&env, &observer).await <= 2).then_some(())
    })
    .await;
    assert!(
        shrunk.is_some(),
        "idle connections beyond MaxOpen 2 were not closed"
    );

    // The next burst must not open more than the new MaxOpen.
    let watch = env.watch_backends().await;
    let load = Load::start(&env, 12).await;
    let progressed = poll_async(SETTLE, Duration::from_millis(20), || async {
        (load.commits.load(Ordering::Relaxed) >= 150).then_some(())
    })
    .await;
    let (max, seen) = watch.max().await;
    load.finish().await;
    assert!(progressed.is_some(), "the second burst stalled");
    assert!(
        max <= 2,
        "{max} server connections with MaxOpen 2: {seen:?}"
    );
}

#[tokio::test]
async fn sighup_changes_the_log_level() {
    let mut env = Env::start(&["rg_log"], pool(1)).await;
    let t = env.tenant(0).clone();
    env.config.log.level = "debug".into();
    env.perseus.rewrite_config(&env.config);
    env.perseus.send_signal(libc::SIGHUP);
    let changed = poll_async(SETTLE, Duration::from_millis(20), || async {
        env.perseus
            .log()
            .contains("log level changed")
            .then_some(())
    })
    .await;
    assert!(changed.is_some(), "{}", env.perseus.log());
    // Debug lines now appear (tokio-postgres and the pooler log at debug on a login).
    let before = env
        .perseus
        .log()
        .lines()
        .filter(|l| l.contains("DEBUG"))
        .count();
    let c = env.connect(&t).await;
    c.simple_query("SELECT 1").await.unwrap();
    let more = poll_async(SETTLE, Duration::from_millis(20), || async {
        let now = env
            .perseus
            .log()
            .lines()
            .filter(|l| l.contains("DEBUG"))
            .count();
        (now > before).then_some(())
    })
    .await;
    assert!(more.is_some(), "no DEBUG lines after the level change");
}
