//! Test harness shared by the integration tests: real PostgreSQL clusters, a KMS emulator,
//! tenant rows and the `perseus` daemon as a child process.
//!
//! The integration binary declares it as `mod support;` and `alloc_budget.rs` by its path. Not
//! every test uses every helper.
//!
//! Fixture lifetime: `shared_pg()` / `shared_moto()` start a fixture once per test
//! *process* and keep it in a static. Under `cargo test` that is once per test binary;
//! under cargo-nextest every test is its own process, so every test gets its own
//! fixtures (a cluster costs about 0.3 s because it is copied from a cached `initdb`
//! template, moto about 1 s). Statics are never dropped, so every fixture process is
//! paired with a watchdog (see `proc.rs`) that stops it when the test process exits,
//! however it exits: normal end, panic, abort or SIGKILL from a nextest timeout.
#![allow(dead_code)]

pub mod daemon;
pub mod datapath;
pub mod env;
pub mod moto;
pub mod perseus;
pub mod pg;
pub mod pg_template;
pub mod proc;
pub mod tenant;
pub mod wire;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// Short paths for the types most tests name; not every test binary uses each.
#[allow(unused_imports)]
pub use {moto::Moto, perseus::Perseus, pg::PgCluster, tenant::TenantSpec};

/// The cluster shared by every test of this process. Tests must not stop it: outage
/// tests start their own `PgCluster`.
pub fn shared_pg() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(PgCluster::start)
}

/// The KMS emulator shared by every test of this process, with one key already made.
pub fn shared_moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// Both shared fixtures, started side by side because moto's start-up is the slow one.
pub fn shared_pg_and_moto() -> (&'static PgCluster, &'static Moto) {
    std::thread::scope(|s| {
        let moto = s.spawn(shared_moto);
        let pg = shared_pg();
        let moto = match moto.join() {
            Ok(m) => m,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (pg, moto)
    })
}

/// The repository root (where Cargo.toml, migrations/ and .venv/ live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port nobody listens on right now. Another process may take it before the
/// caller binds it, so callers retry with a fresh port when their bind fails.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Two different free ports: both are held while the second is picked, so the kernel cannot
/// hand out the first one again.
pub fn free_port_pair() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local_addr").port();
    (port(&a), port(&b))
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Calls `probe` every `interval` until it yields a value or `timeout` passes.
pub fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// Async twin of [`poll`] for probes that talk to a server.
pub async fn poll_async<T, F, Fut>(timeout: Duration, interval: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// A name no other test of this run uses: for databases, roles, schemas and tenants.
/// Lower case, so it needs no quoting and survives PostgreSQL's identifier folding.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{seq}", std::process::id())
}

/// Quotes an SQL identifier the way `quote_ident` does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings is on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
