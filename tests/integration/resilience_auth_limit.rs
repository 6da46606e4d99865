//! Brute-force protection end to end: repeated wrong passwords from one address get that
//! address refused (28000, before any password is asked for) whatever it tries, other
//! addresses are untouched, and the block lifts by itself when the window passes.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;
use tokio_postgres::NoTls;

use support::datapath::{Env, db_error, pool, tenant_index};
use support::env::TenantEnv;
use support::wire::Wire;
use support::{Perseus, poll_async};

const MAX_FAILURES: u32 = 3;
const WINDOW: Duration = Duration::from_secs(3);
const BLOCKED: &str = "too many failed authentication attempts";

async fn start() -> Env {
    Env::start_with(&["limited_a", "limited_b"], |config| {
        config.pool = pool(2);
        config.auth_limit.max_failures = MAX_FAILURES;
        config.auth_limit.window = WINDOW;
    })
    .await
}

/// Logs in with `config` over a socket bound to `source` (any 127.0.0.0/8 address works on
/// Linux loopback), so a test can be two different client addresses.
async fn connect_from(
    source: Ipv4Addr,
    port: u16,
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap_or_else(|e| panic!("connect from {source} to perseus: {e}"));
    let (client, conn) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn expect_refused(result: Result<tokio_postgres::Client, tokio_postgres::Error>, what: &str) {
    let e = match result {
        Ok(_) => panic!("{what}: login succeeded while the address is blocked"),
        Err(e) => e,
    };
    let (code, message) = db_error(&e);
    assert_eq!(code, "28000", "{what}: {message}");
    assert!(message.contains(BLOCKED), "{what}: {message}");
}

#[tokio::test]
async fn repeated_wrong_passwords_block_the_address_until_the_window_passes() {
    let env = start().await;
    let port = env.perseus.port();
    let (a, b) = (env.tenant(0).clone(), env.tenant(1).clone());
    let attacker = Ipv4Addr::LOCALHOST;
    let bystander = Ipv4Addr::new(127, 0, 0, 2);
    let mut wrong = env.client_config(&a);
    wrong.password("guess");

    // Below the threshold a wrong password is an ordinary 28P01.
    for i in 0..MAX_FAILURES {
        let e = match connect_from(attacker, port, &wrong).await {
            Ok(_) => panic!("a wrong password logged in"),
            Err(e) => e,
        };
        assert_eq!(db_error(&e).0, "28P01", "attempt {i}: {e}");
    }
    let blocked_at = Instant::now();

    // Now the address is refused whatever it sends: the right password, another tenant.
    expect_refused(
        connect_from(attacker, port, &env.client_config(&a)).await,
        "right password, same tenant",
    )
    .await;
    expect_refused(
        connect_from(attacker, port, &env.client_config(&b)).await,
        "another tenant",
    )
    .await;

    // Refused right after the StartupMessage: no password request, no scrypt work.
    let mut w = Wire::connect(port).await;
    w.startup(&[
        ("user", &a.source_user),
        ("database", &a.source_db),
        ("schema_search_path", &a.source_schema),
    ])
    .await;
    let first = w.recv().await.expect("an answer to the StartupMessage");
    assert_eq!(first.tag, b'E', "expected an ErrorResponse, got {first:?}");
    assert_eq!(first.code(), "28000", "{}", first.message());
    assert!(first.message().contains(BLOCKED), "{}", first.message());
    assert!(w.closed().await);

    // Another address is not affected.
    let client = connect_from(bystander, port, &env.client_config(&b))
        .await
        .unwrap_or_else(|e| panic!("a different client address was refused too: {e}"));
    let v = tenant_index(&client).await;
    assert_eq!(v, 1);

    // After the window the right password works again, without anyone doing anything.
    let back = poll_async(
        WINDOW + Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            connect_from(attacker, port, &env.client_config(&a))
                .await
                .ok()
        },
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "the address is still refused {:?} after it was blocked\n{}",
            blocked_at.elapsed(),
            env.perseus.log()
        )
    });
    assert!(
        blocked_at.elapsed() >= WINDOW - Duration::from_millis(500),
        "the block lifted after only {:?} (window {WINDOW:?})",
        blocked_at.elapsed()
    );
    let v = tenant_index(&back).await;
    assert_eq!(v, 0);

    // The operator sees the block in the log; the guessed password never appears.
    let log = env.perseus.log();
    assert!(log.contains(BLOCKED), "no log line about the block:\n{log}");
    assert!(!log.contains("guess"), "a password reached the log");
}

#[tokio::test]
async fn zero_max_failures_disables_the_limiter() {
    let world = TenantEnv::new(&["unlimited"]).await;
    let mut config = world.config();
    config.pool = pool(1);
    config.auth_limit.max_failures = 0;
    let perseus = Perseus::start(&config);
    let t = &world.tenants[0];
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(perseus.port())
        .user(&t.source_user)
        .dbname(&t.source_db)
        .options(support::datapath::tenant_options(t))
        .password("guess");
    for i in 0..12 {
        let e = match c.connect(NoTls).await {
            Ok(_) => panic!("a wrong password logged in"),
            Err(e) => e,
        };
        assert_eq!(db_error(&e).0, "28P01", "attempt {i}: {e}");
    }
    c.password(&t.password);
    let (client, conn) = c
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("the right password was refused: {e}"));
    tokio::spawn(conn);
    assert_eq!(tenant_index(&client).await, 0);
}
