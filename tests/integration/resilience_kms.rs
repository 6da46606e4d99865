//! KMS outage: perseus reaches a dedicated moto through a relay that can vanish (connection
//! refused, as when the emulator is stopped) and come back on the same address. A destination
//! decrypted before the outage keeps working; a new one fails clearly and, once KMS is back,
//! is retried rather than remembered as a failure.

use crate::support;
use crate::world;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Moto, poll_async, shared_pg};
use world::{Relay, World, login_and_read};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn decrypted_destinations_survive_a_kms_outage_and_new_ones_are_retried() {
    let pg = shared_pg();
    let moto = Moto::start();
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], moto.port()))).await;
    let mut world = World::new(pg, &moto).await;
    let warm_dest = world.dest(pg);
    let cold_dest = world.dest(pg);
    let warm = world.tenant(pg, &warm_dest, "warm", 1).await;
    let cold = world.tenant(pg, &cold_dest, "cold", 2).await;
    let mut config = world.config();
    config.aws.endpoint = relay.endpoint();
    let perseus = support::Perseus::start(&config);
    let port = perseus.port();

    assert_eq!(login_and_read(port, &warm, LIMIT).await, Ok(1));

    relay.down();

    // The warm destination's password was decrypted once and is kept: new logins work.
    for _ in 0..3 {
        assert_eq!(
            login_and_read(port, &warm, LIMIT).await,
            Ok(1),
            "{}",
            perseus.log()
        );
    }

    // The cold destination cannot be set up: a clear 08001, in bounded time.
    let started = Instant::now();
    let e = login_and_read(port, &cold, LIMIT)
        .await
        .expect_err("a destination needing KMS was served with KMS down");
    let took = started.elapsed();
    assert!(
        e.starts_with("08001: cannot route tenant: cannot decrypt the destination password"),
        "unexpected error: {e}"
    );
    assert!(
        !e.contains(world::DEST_PASSWORD),
        "a password in an error: {e}"
    );
    assert!(
        took < Duration::from_secs(35),
        "the failure took {took:?} (the KMS client's operation timeout is 30 s)"
    );
    // And again: a failure is not remembered, each login asks KMS anew.
    let decrypt_failures = |log: &str| {
        log.matches("cannot decrypt the destination password")
            .count()
    };
    let before = decrypt_failures(&perseus.log());
    assert!(login_and_read(port, &cold, LIMIT).await.is_err());
    let counted = poll_async(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { (decrypt_failures(&perseus.log()) > before).then_some(()) },
    )
    .await;
    assert!(
        counted.is_some(),
        "second failure not logged\n{}",
        perseus.log()
    );

    relay.up();
    let healed = poll_async(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { login_and_read(port, &cold, LIMIT).await.ok() },
    )
    .await;
    assert_eq!(
        healed,
        Some(2),
        "the new destination was never retried after KMS returned\n{}",
        perseus.log()
    );
    assert_eq!(login_and_read(port, &warm, LIMIT).await, Ok(1));
    let log = perseus.log();
    assert!(
        !log.contains(world::DEST_PASSWORD),
        "a destination password reached the log"
    );
}
