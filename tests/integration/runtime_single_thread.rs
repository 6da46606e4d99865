//! `WorkerThreads: 1` runs the daemon on tokio's single-threaded scheduler: the whole data
//! path (logins with scrypt, waiting checkouts, cancels) must work with every task and the
//! I/O driver on one thread, and no worker pool may be started beside it.

use crate::support;

use std::time::Duration;

use support::daemon::wait_log;
use support::datapath::{Env, db_error, pool, tenant_index};
use tokio_postgres::NoTls;

/// Names of the daemon's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the daemon's threads");
    dir.filter_map(|e| {
        let path = e.ok()?.path().join("comm");
        Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
    })
    .collect()
}

fn workers(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|n| n.as_str() == "perseus-worker")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_serves_many_clients_over_a_small_pool() {
    let env = Env::start_with(&["tenant_a", "tenant_b"], |c| {
        c.pool = pool(2);
        c.worker_threads = 1;
    })
    .await;
    assert_eq!(
        workers(env.perseus.pid()),
        0,
        "a worker pool was started: {:?}",
        thread_names(env.perseus.pid())
    );

    // 16 clients of two tenants over 2 server connections: most checkouts wait for another
    // client's release, and every login is verified (scrypt on the blocking pool, then the
    // credential cache).
    let mut tasks = Vec::new();
    for i in 0..16usize {
        let tenant = env.tenant(i % 2).clone();
        let config = env.client_config(&tenant);
        tasks.push(tokio::spawn(async move {
            let (client, conn) = config.connect(NoTls).await.expect("log in");
            tokio::spawn(conn);
            for _ in 0..25 {
                let v = tenant_index(&client).await;
                assert_eq!(v as usize, i % 2, "client {i} saw another tenant's row");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("clients finished in time")
            .expect("client task");
    }

    // A cancel reaches the query on whichever connection runs it.
    let client = env.connect(env.tenant(0)).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(30)").await.map(|_| ());
        (client, r)
    });
    let observer = env.dest_super().await;
    env.wait_backend(&observer, "active", "pg_sleep(30)").await;
    token.cancel_query(NoTls).await.expect("send the cancel");
    let (client, r) = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the cancelled query returns")
        .unwrap();
    assert_eq!(db_error(&r.expect_err("cancelled")).0, "57014");
    let v = tenant_index(&client).await;
    assert_eq!(v, 0);
    assert!(!env.perseus.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_is_logged_and_a_reload_cannot_change_it() {
    let mut env = Env::start_with(&["tenant_a"], |c| c.worker_threads = 1).await;
    assert!(
        wait_log(&env.perseus, "runtime=single-threaded").await,
        "startup log does not name the runtime:\n{}",
        env.perseus.log()
    );
    // Written to a file, the log is plain text: no terminal colour codes around fields.
    assert!(
        !env.perseus.log().contains('\x1b'),
        "colour codes in the log"
    );
    env.config.worker_threads = 4;
    env.perseus.rewrite_config(&env.config);
    env.perseus.send_signal(libc::SIGHUP);
    assert!(
        wait_log(&env.perseus, "WorkerThreads changed, needs restart").await,
        "no restart warning:\n{}",
        env.perseus.log()
    );
    assert!(wait_log(&env.perseus, "SIGHUP: configuration reloaded").await);
    assert_eq!(workers(env.perseus.pid()), 0, "the reload started workers");
    let client = env.connect(env.tenant(0)).await;
    let v = tenant_index(&client).await;
    assert_eq!(v, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_threads_start_a_worker_pool() {
    let env = Env::start_with(&["tenant_a"], |c| c.worker_threads = 3).await;
    let client = env.connect(env.tenant(0)).await;
    let v = tenant_index(&client).await;
    assert_eq!(v, 0);
    assert!(
        workers(env.perseus.pid()) >= 3,
        "fewer than 3 workers: {:?}",
        thread_names(env.perseus.pid())
    );
    assert!(
        wait_log(&env.perseus, "runtime=3 worker threads").await,
        "startup log does not name the runtime:\n{}",
        env.perseus.log()
    );
}
