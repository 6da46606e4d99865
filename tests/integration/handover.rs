//! Restarting without refusing connections: with `ListenReusePort` a second daemon starts on
//! the running one's client and metrics ports, both serve, and once the first is told to
//! stop, every new connection reaches the second. Without the key the second cannot start.

use crate::support;

use std::time::Duration;

use support::daemon::log_lines_with;
use support::datapath::{Env, SETTLE, pool};
use support::perseus::Perseus;
use support::poll_async;

/// What each daemon logs once per login.
const LOGGED_IN: &str = "client logged in";

/// Connects as the env's tenant `count` times in turn, running a query on each connection.
async fn serve_some(env: &Env, count: usize) {
    for i in 0..count {
        let client = env.connect(env.tenant(0)).await;
        let row = client
            .query_one("SELECT $1::int", &[&(i as i32)])
            .await
            .unwrap_or_else(|e| panic!("query on connection {i}: {e}"));
        assert_eq!(row.get::<_, i32>(0), i as i32);
    }
}

/// Waits until the two daemons' logs hold `total` logins between them; returns each count.
async fn logins(a: &Perseus, b: &Perseus, total: usize) -> (usize, usize) {
    let counts = || (log_lines_with(a, LOGGED_IN), log_lines_with(b, LOGGED_IN));
    poll_async(SETTLE, Duration::from_millis(20), || async {
        let (x, y) = counts();
        (x + y >= total).then_some(())
    })
    .await;
    counts()
}

#[tokio::test]
async fn a_second_daemon_shares_the_port_and_takes_over_when_the_first_stops() {
    let mut env = Env::start_with(&["ho_a"], |config| {
        config.pool = pool(2);
        config.listen_reuse_port = true;
    })
    .await;

    let mut plain = env.config.clone();
    plain.listen_reuse_port = false;
    let refused = Perseus::try_start_beside(&plain, &env.perseus)
        .err()
        .expect("without ListenReusePort a second daemon cannot start on a taken port");
    assert!(refused.contains("in use"), "{refused}");

    let second = Perseus::try_start_beside(&env.config, &env.perseus)
        .unwrap_or_else(|e| panic!("a second daemon with ListenReusePort: {e}"));

    // The kernel spreads connections over both listeners by address hash: among 40, each
    // daemon gets some unless the hash is badly skewed (both empty-handed is ~1e-12).
    const OVERLAP: usize = 40;
    serve_some(&env, OVERLAP).await;
    let (first, by_second) = logins(&env.perseus, &second, OVERLAP).await;
    assert_eq!(first + by_second, OVERLAP, "every login logged once");
    assert!(
        first > 0 && by_second > 0,
        "both daemons serve while both run: {first} and {by_second}"
    );

    env.perseus.send_signal(libc::SIGTERM);
    let status = env
        .perseus
        .wait_exit(SETTLE)
        .expect("the first daemon exits after SIGTERM");
    assert!(status.success(), "exit status {status}");

    // Its port is the second daemon's alone now: every new connection lands there.
    const AFTER: usize = 10;
    serve_some(&env, AFTER).await;
    let (first_after, second_after) = logins(&env.perseus, &second, OVERLAP + AFTER).await;
    assert_eq!(first_after, first, "the stopped daemon served nothing more");
    assert_eq!(second_after, by_second + AFTER);
}
