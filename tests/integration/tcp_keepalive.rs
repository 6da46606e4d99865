//! `TCPSettings` reach the sockets: Perseus's client connections, its server connections and
//! its auth database connection carry the keepalive timer configured, read back from the
//! kernel's socket table (`/proc/net/tcp`), and none with `Keepalive: false`.

use crate::support;

use std::time::Duration;

use support::datapath::{Env, SETTLE, pool};
use support::poll_async;

/// One IPv4 TCP socket as `/proc/net/tcp` lists it.
#[derive(Debug, Clone, Copy)]
struct Sock {
    local_port: u16,
    remote_port: u16,
    established: bool,
    /// 2 while the keepalive timer is armed, 0 when no timer is.
    timer: u8,
    /// Until the timer fires, in clock ticks (USER_HZ, 100 a second on Linux).
    when: u64,
}

fn sockets() -> Vec<Sock> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = |addr: &str| {
        let hex = addr.rsplit(':').next().expect("address:port");
        u16::from_str_radix(hex, 16).expect("hex port")
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (timer, when) = f.get(5)?.split_once(':')?;
            Some(Sock {
                local_port: port(f[1]),
                remote_port: port(f[2]),
                established: f[3] == "01",
                timer: timer.parse().ok()?,
                when: u64::from_str_radix(when, 16).ok()?,
            })
        })
        .collect()
}

/// Perseus's established sockets: accepted on its client port, and to PostgreSQL from the
/// ports its backends see, in the destination database (as the destination role) and in the
/// auth database (the tenant lookup's connection).
async fn perseus_sockets(env: &Env) -> (Vec<Sock>, Vec<Sock>) {
    let ports: Vec<u16> = env
        .dest_super()
        .await
        .query(
            "SELECT client_port FROM pg_stat_activity WHERE client_port > 0 \
             AND (usename = $1 OR datname = $2) AND pid <> pg_backend_pid()",
            &[&env.role, &env.world.auth_db],
        )
        .await
        .expect("read pg_stat_activity")
        .iter()
        .map(|r| r.get::<_, i32>(0) as u16)
        .collect();
    let all = sockets();
    let clients = all
        .iter()
        .filter(|s| s.established && s.local_port == env.perseus.port())
        .copied()
        .collect();
    let servers = all
        .iter()
        .filter(|s| {
            s.established && s.remote_port == env.pg.port() && ports.contains(&s.local_port)
        })
        .copied()
        .collect();
    (clients, servers)
}

/// Starts Perseus with `Keepalive` as given (idle 77 s), holds one client that has run a
/// query, and returns Perseus's client and server sockets once none has data in flight.
async fn sockets_with(keepalive: bool) -> (Vec<Sock>, Vec<Sock>) {
    let env = Env::start_with(&["ka_a"], |config| {
        config.pool = pool(2);
        config.tcp.keepalive = keepalive;
        config.tcp.keepalive_idle = Duration::from_secs(77);
        config.tcp.keepalive_interval = Duration::from_secs(5);
        config.tcp.keepalive_count = 3;
    })
    .await;
    let client = env.connect(env.tenant(0)).await;
    client.simple_query("SELECT 1").await.expect("a query");
    // A retransmission timer (1) shows while a reply is unacknowledged; loopback acks at once.
    let settled = poll_async(SETTLE, Duration::from_millis(20), || async {
        let (clients, servers) = perseus_sockets(&env).await;
        let quiet = |s: &Sock| s.timer != 1;
        (!clients.is_empty() && !servers.is_empty() && clients.iter().chain(&servers).all(quiet))
            .then_some((clients, servers))
    })
    .await;
    let found = settled.unwrap_or_else(|| {
        panic!(
            "no settled client and server sockets of perseus: {:?}",
            sockets()
        )
    });
    drop(client);
    found
}

#[tokio::test]
async fn client_and_server_connections_carry_the_configured_keepalive() {
    let (clients, servers) = sockets_with(true).await;
    for s in clients.iter().chain(&servers) {
        assert_eq!(s.timer, 2, "keepalive timer armed: {s:?}");
        // Within the 77 s configured (at up to 1,000 ticks a second), far below the
        // system's two hours.
        assert!(
            s.when > 0 && s.when <= 77 * 1000,
            "fires within 77 s: {s:?}"
        );
    }
}

#[tokio::test]
async fn keepalive_off_arms_no_timer() {
    let (clients, servers) = sockets_with(false).await;
    for s in clients.iter().chain(&servers) {
        assert_eq!(s.timer, 0, "no keepalive timer: {s:?}");
    }
}
