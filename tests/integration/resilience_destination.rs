//! Destination outage: the destination cluster (its own, so nothing else depends on it) is
//! stopped under load and started again. Clients get errors during the outage, never wait past
//! the pool's timeouts, and the pool heals by itself when the server returns.

use crate::support;
use crate::world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::datapath::pool;
use support::{Perseus, PgCluster, TenantSpec, poll_async, shared_pg_and_moto};
use world::{World, connect, describe, login_and_read};

const CLIENTS: usize = 6;
const WAIT: Duration = Duration::from_secs(3);
const CREATE: Duration = Duration::from_secs(2);
/// No single login or query may take longer than this: the pool's own bounds plus slack for
/// a loaded machine. Anything longer counts as a hang.
const OP_BOUND: Duration = Duration::from_secs(12);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Before,
    Outage,
    After,
}

#[derive(Default)]
struct Tally {
    ok: BTreeMap<(usize, Phase), u32>,
    errors: BTreeMap<(usize, Phase), u32>,
    /// Distinct error texts seen, for the failure message and the assertion on their kind.
    kinds: BTreeMap<String, u32>,
    slowest: Duration,
    hangs: Vec<String>,
}

struct Load {
    phase: Mutex<Phase>,
    tally: Mutex<Tally>,
    stop: AtomicBool,
}

impl Load {
    fn count(&self, who: usize, ok: bool, phase: Phase) -> u32 {
        let t = self.tally.lock().unwrap();
        let map = if ok { &t.ok } else { &t.errors };
        let _ = phase;
        *map.get(&(who, phase)).unwrap_or(&0)
    }

    fn all(&self, ok: bool, phase: Phase) -> bool {
        (0..CLIENTS).all(|i| self.count(i, ok, phase) > 0)
    }
}

/// One client: keeps a session and runs short transactions; on any error drops the session
/// and logs in again. Every operation is timed.
async fn client(who: usize, port: u16, t: TenantSpec, expect: i32, load: Arc<Load>) {
    let mut session: Option<tokio_postgres::Client> = None;
    // Bounded: at several operations per second this covers far more than the test's run.
    for _ in 0..100_000 {
        if load.stop.load(Ordering::Relaxed) {
            return;
        }
        let phase = *load.phase.lock().unwrap();
        let started = Instant::now();
        let op = async {
            if session.is_none() {
                session = Some(connect(port, &t).await.map_err(describe)?);
            }
            let c = session.as_ref().expect("session just made");
            let tx = c
                .simple_query("BEGIN; SELECT v FROM t; COMMIT")
                .await
                .map_err(describe)?;
            let rows = support::datapath::simple_rows(&tx);
            if rows != vec![vec![Some(expect.to_string())]] {
                return Err(format!("wrong rows: {rows:?}"));
            }
            Ok(())
        };
        let result = match tokio::time::timeout(OP_BOUND, op).await {
            Ok(r) => r,
            Err(_) => Err(format!("HUNG for {OP_BOUND:?}")),
        };
        let took = started.elapsed();
        let failed = result.is_err();
        {
            let mut tally = load.tally.lock().unwrap();
            tally.slowest = tally.slowest.max(took);
            match result {
                Ok(()) => *tally.ok.entry((who, phase)).or_default() += 1,
                Err(e) => {
                    *tally.errors.entry((who, phase)).or_default() += 1;
                    if e.starts_with("HUNG") || took > OP_BOUND {
                        tally.hangs.push(format!("client {who} in {phase:?}: {e}"));
                    }
                    *tally.kinds.entry(e).or_default() += 1;
                }
            }
        }
        if failed {
            session = None;
            // Pacing, so a refused reconnect does not spin; not a synchronisation.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_heals_by_itself_after_the_destination_restarts_under_load() {
    let (auth_pg, moto) = shared_pg_and_moto();
    let dest_pg = PgCluster::start();
    let mut world = World::new(auth_pg, moto).await;
    let dest = world.dest(&dest_pg);
    let a = world.tenant(&dest_pg, &dest, "busy_a", 1).await;
    let b = world.tenant(&dest_pg, &dest, "busy_b", 2).await;
    let mut config = world.config();
    config.pool = pool(3);
    config.pool.wait_timeout = WAIT;
    config.pool.conn_create_timeout = CREATE;
    let perseus = Perseus::start(&config);
    let port = perseus.port();

    let load = Arc::new(Load {
        phase: Mutex::new(Phase::Before),
        tally: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (t, v) = if i % 2 == 0 { (&a, 1) } else { (&b, 2) };
            tokio::spawn(client(i, port, t.clone(), v, load.clone()))
        })
        .collect();
    let report = |load: &Load| {
        let t = load.tally.lock().unwrap();
        format!(
            "ok {:?}\nerrors {:?}\nkinds {:#?}\nslowest {:?}\nperseus log:\n{}",
            t.ok,
            t.errors,
            t.kinds,
            t.slowest,
            support::log_tail(&perseus.log_path(), 40)
        )
    };

    let warm = poll_async(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { load.all(true, Phase::Before).then_some(()) },
    )
    .await;
    assert!(warm.is_some(), "load never got going\n{}", report(&load));

    *load.phase.lock().unwrap() = Phase::Outage;
    dest_pg.stop();
    let noticed = poll_async(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { load.all(false, Phase::Outage).then_some(()) },
    )
    .await;
    assert!(
        noticed.is_some(),
        "not every client saw an error with the destination down\n{}",
        report(&load)
    );
    // A client starting now fails within the pool's bounds too.
    let started = Instant::now();
    let e = login_and_read(port, &a, OP_BOUND)
        .await
        .expect_err("logged in with the destination down");
    assert!(!e.starts_with("HUNG"), "{e}");
    assert!(e.starts_with("08001"), "login during the outage: {e}");
    assert!(started.elapsed() <= OP_BOUND, "{:?}", started.elapsed());

    dest_pg.restart();
    *load.phase.lock().unwrap() = Phase::After;
    let healed = poll_async(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { load.all(true, Phase::After).then_some(()) },
    )
    .await;
    assert!(
        healed.is_some(),
        "not every client recovered after the destination returned\n{}",
        report(&load)
    );
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(OP_BOUND * 2, t)
            .await
            .expect("a load client did not stop")
            .expect("a load client panicked");
    }

    let summary = report(&load);
    {
        let tally = load.tally.lock().unwrap();
        assert!(
            tally.hangs.is_empty(),
            "hangs: {:?}\n{summary}",
            tally.hangs
        );
        assert!(
            tally.slowest <= WAIT + CREATE + Duration::from_secs(5),
            "an operation took {:?}\n{summary}",
            tally.slowest
        );
        // Every error is an ErrorResponse with a connection-class (08), shutdown (57P01) or
        // too-many (53300) SQLSTATE, never a bare dropped socket.
        for kind in tally.kinds.keys() {
            let code = kind.split(':').next().unwrap_or("");
            assert!(
                code.starts_with("08") || code == "57P01" || code == "53300",
                "unexpected error {kind:?}\n{summary}"
            );
        }
    }

    // A fresh client works with no manual action.
    assert_eq!(login_and_read(port, &b, OP_BOUND).await, Ok(2), "{summary}");
    eprintln!("{summary}");
}
