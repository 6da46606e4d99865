//! Auth DB outage (its own cluster, stopped after warm-up): a tenant seen before keeps logging
//! in on its last good row, an unseen tenant fails within AuthQueryTimeoutSecs with 08001,
//! and everything heals when the auth DB returns; a deleted row takes effect within the TTL.

use crate::support;
use crate::world;

use std::time::{Duration, Instant};

use support::{Perseus, PgCluster, TenantSpec, poll_async, shared_pg_and_moto};
use world::{World, login_and_read};

const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const TTL: Duration = Duration::from_secs(1);
/// Bound on any one login attempt in these tests: a hang fails the test instead of stalling it.
const LIMIT: Duration = Duration::from_secs(20);

/// An auth DB on a cluster of its own with two tenants, `known` (value 1) and `unseen`
/// (value 2), and perseus in front with QUERY_TIMEOUT and TTL; only `known` has logged in.
struct Outage<'a> {
    world: World<'a>,
    known: TenantSpec,
    unseen: TenantSpec,
    perseus: Perseus,
}

impl<'a> Outage<'a> {
    async fn start(auth_pg: &'a PgCluster, known: &str, unseen: &str) -> Outage<'a> {
        let (dest_pg, moto) = shared_pg_and_moto();
        let mut world = World::new(auth_pg, moto).await;
        let dest = world.dest(dest_pg);
        let known = world.tenant(dest_pg, &dest, known, 1).await;
        let unseen = world.tenant(dest_pg, &dest, unseen, 2).await;
        let mut config = world.config();
        config.auth_db.query_timeout = QUERY_TIMEOUT;
        config.auth_db.cache_ttl = TTL;
        let perseus = Perseus::start(&config);
        assert_eq!(login_and_read(perseus.port(), &known, LIMIT).await, Ok(1));
        Outage {
            world,
            known,
            unseen,
            perseus,
        }
    }

    /// Logs the known tenant in (each login must succeed, and within `login_bound` when
    /// given) until perseus logs that it fell back to the stale row, for up to `timeout`.
    async fn wait_stale_fallback(&self, timeout: Duration, login_bound: Option<Duration>) {
        let port = self.perseus.port();
        let stale = poll_async(timeout, Duration::from_millis(100), || async {
            let started = Instant::now();
            assert_eq!(
                login_and_read(port, &self.known, LIMIT).await,
                Ok(1),
                "a known tenant failed with the auth DB unavailable\n{}",
                self.perseus.log()
            );
            let took = started.elapsed();
            if let Some(bound) = login_bound {
                assert!(took <= bound, "a known tenant's login took {took:?}");
            }
            self.perseus
                .log()
                .contains("using stale tenant row")
                .then_some(())
        })
        .await;
        assert!(
            stale.is_some(),
            "no stale-row fallback was logged\n{}",
            self.perseus.log()
        );
    }

    /// Logs the unseen tenant in, which must fail (else panics with `why`) with 08001
    /// "authentication database unavailable"; returns how long the failure took.
    async fn unseen_fails(&self, why: &str) -> Duration {
        let started = Instant::now();
        let e = login_and_read(self.perseus.port(), &self.unseen, LIMIT)
            .await
            .expect_err(why);
        let took = started.elapsed();
        assert!(
            e.starts_with("08001: authentication database unavailable"),
            "unexpected error: {e}"
        );
        took
    }

    /// Waits up to 30 s for the unseen tenant to log in once the auth DB is back.
    async fn wait_unseen_heals(&self) {
        let port = self.perseus.port();
        let healed = poll_async(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { login_and_read(port, &self.unseen, LIMIT).await.ok() },
        )
        .await;
        assert_eq!(
            healed,
            Some(2),
            "the unseen tenant never logged in after the auth DB returned\n{}",
            self.perseus.log()
        );
    }
}

#[tokio::test]
async fn known_tenants_survive_an_auth_db_outage_and_unseen_ones_fail_fast() {
    let auth_pg = PgCluster::start();
    let outage = Outage::start(&auth_pg, "known", "unseen").await;

    auth_pg.stop();

    // The known tenant's row is past its TTL, so each login asks the auth DB, which is down:
    // it must go on working on the stale row (and say so in the log).
    outage
        .wait_stale_fallback(Duration::from_secs(15), None)
        .await;

    // An unseen tenant fails clearly, and within about AuthQueryTimeoutSecs.
    let took = outage
        .unseen_fails("an unseen tenant logged in with the auth DB down")
        .await;
    assert!(
        took <= QUERY_TIMEOUT + Duration::from_secs(3),
        "the unseen tenant's login took {took:?} to fail (AuthQueryTimeoutSecs is {QUERY_TIMEOUT:?})"
    );

    // Back up: the unseen tenant logs in without any action on perseus.
    auth_pg.restart();
    outage.wait_unseen_heals().await;
    assert_eq!(
        login_and_read(outage.perseus.port(), &outage.known, LIMIT).await,
        Ok(1)
    );
}

#[tokio::test]
async fn an_auth_db_that_hangs_costs_at_most_the_query_timeout() {
    let auth_pg = PgCluster::start();
    let outage = Outage::start(&auth_pg, "known_h", "unseen_h").await;

    // Every auth-DB backend sleeps in an exclusive lock wait: queries hang, nothing refuses.
    let locker = auth_pg.connect(&outage.world.auth_db).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE perseus_auth IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock perseus_auth");
    // Once its cached row is past the TTL, the known tenant's login asks the hung auth DB,
    // gives up after the query timeout and uses the stale row.
    let bound = QUERY_TIMEOUT + Duration::from_secs(3);
    outage
        .wait_stale_fallback(Duration::from_secs(20), Some(bound))
        .await;
    let took = outage
        .unseen_fails("an unseen tenant logged in while the auth DB hung")
        .await;
    assert!(
        took >= QUERY_TIMEOUT - Duration::from_millis(200) && took <= bound,
        "the unseen tenant's login took {took:?} (AuthQueryTimeoutSecs is {QUERY_TIMEOUT:?})"
    );

    locker.batch_execute("COMMIT").await.expect("unlock");
    outage.wait_unseen_heals().await;
}

#[tokio::test]
async fn a_deleted_row_takes_effect_within_the_ttl() {
    let (pg, moto) = shared_pg_and_moto();
    let mut world = World::new(pg, moto).await;
    let dest = world.dest(pg);
    let gone = world.tenant(pg, &dest, "to_delete", 5).await;
    let mut config = world.config();
    config.auth_db.cache_ttl = TTL;
    let perseus = Perseus::start(&config);
    let port = perseus.port();
    assert_eq!(login_and_read(port, &gone, LIMIT).await, Ok(5));

    pg.connect(&world.auth_db)
        .await
        .execute(
            "DELETE FROM perseus_auth WHERE source_schema = $1",
            &[&gone.source_schema],
        )
        .await
        .expect("delete the row");
    let deleted_at = Instant::now();
    let refused = poll_async(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { login_and_read(port, &gone, LIMIT).await.err() },
    )
    .await
    .unwrap_or_else(|| panic!("a deleted tenant kept logging in\n{}", perseus.log()));
    assert!(refused.starts_with("28P01"), "{refused}");
    assert!(
        deleted_at.elapsed() <= TTL + Duration::from_secs(5),
        "the deletion took {:?} to take effect (CacheTTLSecs is {TTL:?})",
        deleted_at.elapsed()
    );
}
