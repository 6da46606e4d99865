//! Resident memory per idle client: logged-in clients that send nothing must cost the daemon
//! little, since a pooler's point is holding many more clients than server connections.
//! Measured as the growth of perseus's VmRSS between holding a first batch of clients (which
//! warms everything shared: credential cache, pools, runtime and allocator structures) and
//! holding a second, larger batch on top of it.

use crate::support;

use std::time::Duration;

use support::TenantSpec;
use support::datapath::{Env, pool};
use support::wire::Wire;

/// Clients held before the baseline is read.
const WARM_UP: usize = 100;
/// Clients added on top of them and measured.
const MEASURED: usize = 500;
/// Logins in flight at once.
const BATCH: usize = 50;
/// Bound on the growth per measured client. An idle client cost 22 KiB before the login
/// state, the TLS path and a duplicate settings map were taken out of its task, and 17 KiB
/// while deadpool's checkout future sat inline in the session loop; it costs 12 KiB now.
/// Lower this as the session loop shrinks; the margin absorbs a shared machine's noise.
const MAX_PER_CLIENT: u64 = 16 * 1024;
/// Bound on the growth over the warm-up: its clients and the scrypt runs of the
/// first login of each of the 3 tenants. Scrypt's 16 MiB blocks kept by the allocator made
/// it about 50 MiB; now it is a few MiB.
const MAX_WARM_UP: u64 = 24 << 20;
/// How long the daemon's RSS may take to stop moving once every client is logged in.
const SETTLE: Duration = Duration::from_secs(20);

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}

/// The daemon's RSS once it has stopped changing: three equal reads 200 ms apart, within
/// SETTLE (the last read if it never settles, which only makes the figure noisier).
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_bytes(pid);
    let mut same = 0;
    let deadline = tokio::time::Instant::now() + SETTLE;
    while same < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_bytes(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

async fn login(port: u16, t: TenantSpec) -> Wire {
    let mut w = Wire::connect(port).await;
    let params = [
        ("user", t.source_user.as_str()),
        ("database", t.source_db.as_str()),
        ("schema_search_path", t.source_schema.as_str()),
        ("application_name", "idle-memory-test"),
    ];
    if let Err(e) = w.login(&params, &t.password).await {
        panic!("login as {} refused: {}", t.source_user, e.message());
    }
    w
}

/// Logs in `n` clients, spread over the tenants, `BATCH` at a time.
async fn open(env: &Env, n: usize, into: &mut Vec<Wire>) {
    let port = env.perseus.port();
    for start in (0..n).step_by(BATCH) {
        let batch = (start..n.min(start + BATCH))
            .map(|i| login(port, env.tenant(i % env.tenants.len()).clone()));
        into.extend(futures::future::join_all(batch).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_costs_little_memory() {
    let env = Env::start(&["idle_a", "idle_b", "idle_c"], pool(2)).await;
    let pid = env.perseus.pid();
    let started = settled_rss(pid).await;
    let mut clients = Vec::with_capacity(WARM_UP + MEASURED);
    open(&env, WARM_UP, &mut clients).await;
    let before = settled_rss(pid).await;
    open(&env, MEASURED, &mut clients).await;
    let after = settled_rss(pid).await;

    // They are really there: a sample of them, early and late, still answers.
    for w in clients.iter_mut().step_by(50) {
        w.send(b"Q\0\0\0\x0dSELECT 1\0").await;
        let reply = w.until_ready().await;
        assert!(
            reply.iter().any(|m| m.tag == b'D'),
            "an idle client got no row back: {:?}",
            reply.iter().map(|m| m.tag as char).collect::<String>()
        );
    }

    let per_client = after.saturating_sub(before) / MEASURED as u64;
    eprintln!(
        "perseus RSS {} KiB at start, {} KiB with {WARM_UP} clients, {} KiB with {} \
         (+{per_client} bytes per client)",
        started / 1024,
        before / 1024,
        after / 1024,
        WARM_UP + MEASURED
    );
    // Each tenant's first login ran scrypt (16 MiB); those blocks must have gone back.
    let warm_up = before.saturating_sub(started);
    assert!(
        warm_up <= MAX_WARM_UP,
        "RSS grew by {warm_up} bytes over the first {WARM_UP} logins (bound {MAX_WARM_UP}): \
         are scrypt's buffers kept by the allocator again?"
    );
    assert!(
        per_client <= MAX_PER_CLIENT,
        "each idle client costs {per_client} bytes of perseus RSS (bound {MAX_PER_CLIENT}); \
         RSS went from {before} to {after} bytes for {MEASURED} clients"
    );
}
