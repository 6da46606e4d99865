//! The data path allocates nothing per transaction, and a login a bounded amount: counted on
//! the daemon's own thread (the daemon runs in this process on a single-threaded runtime),
//! so a change that adds an allocation per forwarded message fails here, not in a benchmark.

#[path = "integration/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::datapath::{client_config, simple_rows};
use support::env::TenantEnv;
use support::{free_port_pair, poll, port_accepts};
use tokio_postgres::{Client, NoTls};

/// Counts allocations made on threads that opted in (the daemon's); others are not counted,
/// so the test's own client and the blocking pool (scrypt) do not blur the figure.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // try_with: a thread being torn down has no thread-locals left, and is not counted.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches no memory
// the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Rounds measured after the warm-up, per phase.
const ROUNDS: u64 = 1000;

/// Allocations a whole login may make on the daemon's thread (the connection's task and
/// registration, the startup packet, the tenant's names, the session's registrations, its
/// first query's buffers), with the credential cache warm. Measured at 27; the bound
/// catches a login that starts copying per parameter or per setting.
const LOGIN_BUDGET: u64 = 33;

/// Starts the daemon inside this process on a current-thread runtime of its own thread,
/// counted; returns its client port and the thread (ended by SIGTERM).
fn start_daemon(env: &TenantEnv, dir: &std::path::Path) -> (u16, std::thread::JoinHandle<()>) {
    let (port, metrics_port) = free_port_pair();
    let mut config = env.config();
    config.listen_address = format!("127.0.0.1:{port}");
    config.metrics_address = format!("127.0.0.1:{metrics_port}");
    config.pool = support::datapath::pool(2);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).expect("write the config");
    let daemon = std::thread::Builder::new()
        .name("perseus-in-test".into())
        .spawn(move || {
            COUNTED.with(|c| c.set(true));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("daemon runtime");
            rt.block_on(perseus::app::run(path, config, None))
                .expect("the daemon ran and stopped cleanly");
        })
        .expect("start the daemon thread");
    // A daemon that failed to start (its port taken meanwhile) ends its thread: no waiting.
    let up = poll(Duration::from_secs(30), Duration::from_millis(20), || {
        if daemon.is_finished() {
            Some(false)
        } else {
            port_accepts(port).then_some(true)
        }
    });
    assert_eq!(
        up,
        Some(true),
        "the in-process daemon did not listen on {port}"
    );
    (port, daemon)
}

async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, conn) = config.connect(NoTls).await.expect("log in through perseus");
    tokio::spawn(conn);
    client
}

/// Transactions in a [`round`].
const PER_ROUND: u64 = 3;

/// One transaction of each kind the test measures: a simple query, a prepared statement
/// executed (Bind/Execute/Sync), and a transaction block that writes.
async fn round(client: &Client, stmt: &tokio_postgres::Statement, expect: i32) {
    let rows = simple_rows(&client.simple_query("SELECT v FROM t").await.unwrap());
    assert_eq!(rows, [[Some(expect.to_string())]], "the tenant's own row");
    let v: i32 = client.query_one(stmt, &[]).await.unwrap().get(0);
    assert_eq!(v, expect, "the tenant's own row");
    client
        .batch_execute("BEGIN; SELECT v FROM t; UPDATE t SET v = v; COMMIT")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_allocates_nothing_per_transaction_and_a_login_little() {
    let env = TenantEnv::new(&["alloc_a", "alloc_b"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (port, daemon) = start_daemon(&env, dir.path());

    // Two tenants of one destination database: they share its pool.
    let a = connect(&client_config(port, &env.tenants[0])).await;
    let b = connect(&client_config(port, &env.tenants[1])).await;
    let sa = a.prepare("SELECT v FROM t").await.unwrap();
    let sb = b.prepare("SELECT v FROM t").await.unwrap();
    // Warm-up: buffers reach their working size, the pool its connections, each statement is
    // prepared on each server connection.
    for _ in 0..50 {
        round(&a, &sa, 0).await;
        round(&b, &sb, 1).await;
    }

    let before = allocations();
    for _ in 0..ROUNDS {
        round(&a, &sa, 0).await;
    }
    let same_tenant = allocations() - before;

    // One client at a time needs one server connection, so here every round starts with a
    // tenant switch on it: a `SET search_path` round trip, whose SQL text is the one
    // allocation it may make. Client b sat idle through the phase above, long enough for the
    // sweeper to take back its buffers: a few rounds first let them grow again.
    for _ in 0..5 {
        round(&a, &sa, 0).await;
        round(&b, &sb, 1).await;
    }
    let before = allocations();
    for _ in 0..ROUNDS / 2 {
        round(&a, &sa, 0).await;
        round(&b, &sb, 1).await;
    }
    let alternating = allocations() - before;
    let switches = ROUNDS;
    // One backend served both tenants, and each round saw its own tenant's rows: each round
    // switched search_path.
    let observer = env.dest().await;
    let backends: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&env.dest_db],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        backends, 1,
        "one client at a time should need one server connection"
    );
    eprintln!(
        "{} transactions of one tenant: {same_tenant} allocations; {} with {switches} tenant \
         switches: {alternating}",
        ROUNDS * PER_ROUND,
        ROUNDS * PER_ROUND
    );
    // Growth of a buffer or a table now and then is allowed; one per transaction is not.
    assert!(
        same_tenant <= 10,
        "the daemon allocated per transaction: {same_tenant} allocations over {} transactions",
        ROUNDS * PER_ROUND
    );
    assert!(
        alternating <= switches + 10,
        "a tenant switch allocates more than its SQL text: {alternating} allocations for \
         {switches} switches"
    );

    // Logins with the credential cache warm: connect, one query, leave.
    let config = client_config(port, &env.tenants[0]);
    connect(&config)
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    const LOGINS: u64 = 50;
    let before = allocations();
    for _ in 0..LOGINS {
        let c = connect(&config).await;
        c.simple_query("SELECT 1").await.unwrap();
        drop(c);
    }
    let per_login = (allocations() - before) / LOGINS;
    eprintln!(
        "{per_login} allocations per login ({} in {LOGINS})",
        allocations() - before
    );
    assert!(
        per_login <= LOGIN_BUDGET,
        "a login made {per_login} allocations on the daemon's thread (budget {LOGIN_BUDGET})"
    );

    drop((a, b));
    // SAFETY: signalling our own process; the daemon's handler turns SIGTERM into a shutdown.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let stopped = poll(Duration::from_secs(30), Duration::from_millis(20), || {
        daemon.is_finished().then_some(())
    });
    assert!(stopped.is_some(), "the daemon did not stop on SIGTERM");
    daemon
        .join()
        .expect("the daemon thread ended without a panic");
}
