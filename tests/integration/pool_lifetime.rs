//! MaxLifetimeSecs retires server connections: once one has lived its share of the limit
//! (0.9 to 1 of it, so connections opened together do not all close together), it is closed
//! when it comes back and a new one serves the next transaction.

use crate::support;

use std::time::Duration;

use support::datapath::{Env, SETTLE, pool};
use support::poll_async;

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("read the backend pid")
        .get(0)
}

#[tokio::test]
async fn a_connection_past_its_lifetime_is_closed_and_replaced() {
    let env = Env::start_with(&["lt_a"], |config| {
        config.pool = pool(1);
        config.pool.max_lifetime = Duration::from_secs(1);
    })
    .await;
    let client = env.connect(env.tenant(0)).await;
    let first = backend_pid(&client).await;

    // One connection in the pool: every transaction runs on it until it is retired.
    let next = poll_async(SETTLE, Duration::from_millis(50), || async {
        let pid = backend_pid(&client).await;
        (pid != first).then_some(pid)
    })
    .await
    .expect("a new server connection within the settle time after a 1 s lifetime");
    assert_ne!(next, first);

    // The retired one was closed, not left open beside its successor.
    let sup = env.dest_super().await;
    let gone = poll_async(SETTLE, Duration::from_millis(50), || async {
        let n: i64 = sup
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&first],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        (n == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "backend {first} still open after its lifetime"
    );
}
