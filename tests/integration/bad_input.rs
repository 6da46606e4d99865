//! Hostile and broken clients over raw TCP: random bytes, truncated and oversized packets,
//! absurd length fields before and after login, a TLS ClientHello with TLS off, cancel
//! requests with made-up keys, and slowloris connections. None may crash perseus, none may
//! hold a connection past LoginTimeoutSecs before login, and a normal tenant is served after.

use crate::support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::TenantSpec;
use support::datapath::{Env, pool};
use support::wire::{Key, Msg, Wire, cancel_request, tags};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_MESSAGE: u32 = 64 * 1024;
/// How long past the login timeout perseus may take to close a connection on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

async fn start() -> Env {
    Env::start_with(&["victim_a", "victim_b"], |config| {
        config.pool = pool(2);
        config.client.login_timeout = LOGIN_TIMEOUT;
        config.client.max_message_bytes = MAX_MESSAGE;
        // Garbage is not a failed login, but keep the limiter out of the way regardless.
        config.auth_limit.max_failures = 0;
    })
    .await
}

/// A small deterministic generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 1 to `max` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = 1 + self.below(max) as usize;
        self.bytes(n)
    }
}

/// Sends `bytes` (a failed write counts: perseus may hang up first), then reads until perseus
/// closes the connection. Returns what it said and how long closing took from the first byte.
/// Panics if the connection is still open after `bound`.
async fn send_and_wait_close(port: u16, bytes: &[u8], bound: Duration) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to perseus: {e}"));
    let started = Instant::now();
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(bound, read).await.is_err() {
        panic!(
            "perseus kept a connection open for {bound:?} after {} bytes starting {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(16)]
        );
    }
    (got, started.elapsed())
}

/// The ErrorResponses in a byte stream from perseus (frames after any 1-byte answers).
fn errors(mut bytes: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Some(&tag) = bytes.first() {
        if tag == b'N' || tag == b'S' {
            bytes = &bytes[1..];
            continue;
        }
        if bytes.len() < 5 {
            break;
        }
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        if len < 4 || bytes.len() < len + 1 {
            break;
        }
        let m = Msg {
            tag,
            body: bytes[5..len + 1].to_vec(),
        };
        if tag == b'E' {
            out.push(m);
        }
        bytes = &bytes[len + 1..];
    }
    out
}

fn startup_params(t: &TenantSpec) -> [(&str, &str); 3] {
    [
        ("user", t.source_user.as_str()),
        ("database", t.source_db.as_str()),
        ("schema_search_path", t.source_schema.as_str()),
    ]
}

/// A logged-in raw client for `t`.
async fn logged_in(env: &Env, t: &TenantSpec) -> Wire {
    let mut w = Wire::connect(env.perseus.port()).await;
    w.login_tenant(t).await;
    w
}

/// Perseus is alive, has not panicked, and serves a normal tenant query.
async fn still_serving(env: &Env) {
    let client = env.connect(env.tenant(1)).await;
    let v: i32 = tokio::time::timeout(
        Duration::from_secs(20),
        client.query_one("SELECT v FROM t", &[]),
    )
    .await
    .expect("a normal query hung")
    .expect("a normal query failed")
    .get(0);
    assert_eq!(v, 1);
    let log = env.perseus.log();
    assert!(!log.contains("panicked"), "perseus panicked:\n{log}");
    assert!(
        support::proc::send_signal(env.perseus.pid(), 0).is_ok(),
        "perseus is gone"
    );
}

fn be32(v: i32) -> [u8; 4] {
    v.to_be_bytes()
}

#[tokio::test]
async fn random_bytes_before_login_are_refused_in_bounded_time() {
    let env = start().await;
    let port = env.perseus.port();
    let mut rng = Rng(0x5eed_0001);
    let mut answered = 0;
    // All at once: the ones perseus must wait out (too short to judge) then overlap.
    let mut tasks = Vec::new();
    for case in 0..60 {
        let len = match case % 4 {
            0 => 1 + rng.below(8) as usize,
            1 => 8 + rng.below(64) as usize,
            2 => 64 + rng.below(4096) as usize,
            _ => 10_000 + rng.below(20_000) as usize,
        };
        let mut bytes = rng.bytes(len);
        // A TLS record header means direct TLS, which is tried separately below.
        if bytes[0] == 0x16 {
            bytes[0] = 0x17;
        }
        tasks.push(tokio::spawn(async move {
            (
                case,
                send_and_wait_close(port, &bytes, LOGIN_TIMEOUT + SLACK).await,
            )
        }));
    }
    for task in tasks {
        let (case, (reply, took)) = task.await.expect("a garbage connection task panicked");
        assert!(took <= LOGIN_TIMEOUT + SLACK, "case {case}: {took:?}");
        for e in errors(&reply) {
            assert_eq!(e.code(), "08P01", "case {case}: {}", e.message());
            answered += 1;
        }
    }
    // Most random packets have an impossible length or version and are told so.
    assert!(answered >= 30, "only {answered} of 60 got an ErrorResponse");
    still_serving(&env).await;
}

#[tokio::test]
async fn absurd_and_truncated_startup_lengths() {
    let env = start().await;
    let port = env.perseus.port();
    let version = be32(196_608);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("length -1", [&be32(-1)[..], &version].concat(), true),
        (
            "length i32::MAX",
            [&be32(i32::MAX)[..], &version].concat(),
            true,
        ),
        ("length 0", [&be32(0)[..], &version].concat(), true),
        ("length 3", [&be32(3)[..], &version].concat(), true),
        ("length 10001", [&be32(10_001)[..], &version].concat(), true),
        // Announces 200 bytes, sends 20 and waits: only the login timeout ends it.
        (
            "truncated",
            [&be32(200)[..], &version, b"user\0someone\0"].concat(),
            false,
        ),
        // Only part of the length field itself.
        ("two bytes", vec![0, 0], false),
        // A startup packet whose parameters are not terminated.
        (
            "unterminated parameters",
            [&be32(8 + 12)[..], &version, b"user\0bob\0dat"].concat(),
            true,
        ),
        // A cancel request code with the wrong length.
        (
            "short cancel request",
            [&be32(12)[..], &be32(80_877_102), &be32(1)].concat(),
            true,
        ),
        (
            "protocol 4.0",
            [&be32(9)[..], &be32(4 << 16), &[0]].concat(),
            true,
        ),
    ];
    for (what, bytes, fast) in cases {
        let (reply, took) = send_and_wait_close(port, &bytes, LOGIN_TIMEOUT + SLACK).await;
        let errs = errors(&reply);
        if fast {
            assert!(took < LOGIN_TIMEOUT, "{what}: refused only after {took:?}");
            assert_eq!(errs.len(), 1, "{what}: reply {reply:02x?}");
            assert_eq!(errs[0].code(), "08P01", "{what}: {}", errs[0].message());
        } else {
            assert!(
                took >= LOGIN_TIMEOUT - Duration::from_millis(100),
                "{what}: closed after {took:?}, before the login timeout"
            );
            let msgs: Vec<String> = errs.iter().map(|e| e.message()).collect();
            assert!(
                msgs.iter().any(|m| m.contains("login timed out")),
                "{what}: {msgs:?}"
            );
        }
    }
    still_serving(&env).await;
}

#[tokio::test]
async fn a_tls_client_hello_with_tls_disabled_is_dropped() {
    let env = start().await;
    // The start of a TLS 1.2/1.3 ClientHello record, as PostgreSQL 17 direct TLS sends it.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
    ];
    hello.extend(Rng(7).bytes(0xf0 - 2));
    let (reply, took) =
        send_and_wait_close(env.perseus.port(), &hello, LOGIN_TIMEOUT + SLACK).await;
    assert!(took < LOGIN_TIMEOUT, "closed only after {took:?}");
    // Nothing a TLS client would take for a handshake comes back.
    assert!(
        reply.first() != Some(&0x16),
        "perseus answered with a TLS record: {reply:02x?}"
    );
    // An SSLRequest is declined with 'N' and the plaintext startup then works.
    let mut w = Wire::connect(env.perseus.port()).await;
    w.send(&support::wire::encryption_request(true)).await;
    assert_eq!(w.read_byte().await, Some(b'N'));
    let t = env.tenant(0);
    w.login(&startup_params(t), &t.password)
        .await
        .unwrap_or_else(|e| panic!("login after a declined SSLRequest: {}", e.message()));
    still_serving(&env).await;
}

#[tokio::test]
async fn cancel_requests_with_random_keys_touch_nothing() {
    let env = start().await;
    let port = env.perseus.port();
    let client = env.connect(env.tenant(0)).await;
    let sleeper = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(1.5), 'survived'")
            .await
            .map(|m| support::datapath::simple_rows(&m))
    });
    let observer = env.dest_super().await;
    env.wait_backend(&observer, "active", "pg_sleep(1.5)").await;
    let mut rng = Rng(0xca_9ce1);
    for _ in 0..100 {
        let key = Key {
            pid: rng.next() as i32,
            secret: rng.next() as i32,
        };
        let (reply, took) =
            send_and_wait_close(port, &cancel_request(key), LOGIN_TIMEOUT + SLACK).await;
        assert!(
            reply.is_empty(),
            "a cancel request got an answer: {reply:02x?}"
        );
        assert!(took < LOGIN_TIMEOUT, "a cancel request was held {took:?}");
    }
    let rows = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the sleeping query hung")
        .expect("sleeper task")
        .expect("a random cancel key cancelled someone's query");
    assert_eq!(rows[0][1].as_deref(), Some("survived"));
    still_serving(&env).await;
}

/// Writes one byte of `bytes` per second until perseus hangs up; returns when it did.
async fn dribble(mut s: TcpStream, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    let (mut rd, mut wr) = s.split();
    let drip = async {
        for b in bytes {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            // One byte a second is the attack itself, not a wait for anything.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await
    };
    let eof = async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let bound = LOGIN_TIMEOUT + SLACK;
    tokio::select! {
        _ = drip => unreachable!("the drip never ends by itself"),
        r = tokio::time::timeout(bound, eof) => {
            assert!(r.is_ok(), "a slowloris connection was still open after {bound:?}");
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn slowloris_connections_are_cut_at_the_login_timeout() {
    let env = start().await;
    let port = env.perseus.port();
    let t = env.tenant(0).clone();
    let mut startup = BytesMut::new();
    postgres_protocol::message::frontend::startup_message(startup_params(&t), &mut startup)
        .unwrap();

    // 1: the startup packet one byte a second. 2: a prompt startup, then the password one
    // byte a second (the timeout covers authentication too). Both at once, with a normal
    // client served meanwhile.
    let during_startup = dribble(
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        &startup,
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup).await.unwrap();
    let mut password = BytesMut::new();
    postgres_protocol::message::frontend::password_message(t.password.as_bytes(), &mut password)
        .unwrap();
    let during_password = dribble(s, &password);
    let (a, b, ()) = tokio::join!(during_startup, during_password, still_serving(&env));
    for (what, took) in [("startup", a), ("password", b)] {
        assert!(
            took >= LOGIN_TIMEOUT - Duration::from_millis(100) && took <= LOGIN_TIMEOUT + SLACK,
            "slowloris during {what} was cut after {took:?} (LoginTimeoutSecs {LOGIN_TIMEOUT:?})"
        );
    }
    still_serving(&env).await;
}

#[tokio::test]
async fn absurd_lengths_and_garbage_after_login() {
    let env = start().await;
    let t = env.tenant(0).clone();

    // Oversized and impossible length fields on regular messages: a protocol error at once.
    for (what, len) in [
        ("over MaxMessageBytes", MAX_MESSAGE as i32 + 100),
        ("i32::MAX", i32::MAX),
        ("negative", -5),
        ("below 4", 2),
    ] {
        let mut w = logged_in(&env, &t).await;
        let mut frame = vec![b'Q'];
        frame.extend_from_slice(&be32(len));
        frame.extend_from_slice(b"SELECT 1");
        let started = Instant::now();
        w.send(&frame).await;
        let mut codes = Vec::new();
        while let Some(m) = w.recv().await {
            if m.tag == b'E' {
                codes.push((m.code(), m.message()));
            }
        }
        assert!(
            codes.iter().any(|(c, _)| c == "08P01"),
            "{what}: expected a protocol error, got {codes:?}"
        );
        assert!(
            started.elapsed() < LOGIN_TIMEOUT,
            "{what}: took {:?}",
            started.elapsed()
        );
    }

    // A frame cut short, then the client goes away: the server connection is not reused
    // half-written (the next transactions see clean results).
    let mut w = logged_in(&env, &t).await;
    let mut frame = vec![b'Q'];
    frame.extend_from_slice(&be32(4 + 100));
    frame.extend_from_slice(b"SELECT 'half");
    w.send(&frame).await;
    drop(w);

    // Random bytes in place of messages, many seeds: perseus (or the server behind it) ends
    // the session; nothing crashes and nothing hangs.
    let mut rng = Rng(0xbad_1e55);
    let mut ended_by_perseus = 0;
    for _ in 0..30 {
        let mut w = logged_in(&env, &t).await;
        let mut junk = rng.some_bytes(300);
        // 'X' is a polite goodbye and tested elsewhere; keep the junk junk.
        if junk[0] == b'X' {
            junk[0] = b'!';
        }
        w.send(&junk).await;
        // Junk that still looks like the start of a message leaves the session waiting for
        // the rest, as for any slow client; then the client leaves, which must be clean too.
        let wait = async { while w.recv().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .is_ok()
        {
            ended_by_perseus += 1;
        }
    }
    // Almost all random length fields are impossible and refused at once.
    assert!(
        ended_by_perseus >= 20,
        "only {ended_by_perseus} of 30 ended"
    );

    // The pool still hands out good connections: several transactions in a row agree.
    for _ in 0..5 {
        let mut w = logged_in(&env, &t).await;
        let msgs = w.query("SELECT v FROM t").await;
        let rows: Vec<_> = msgs
            .iter()
            .filter(|m| m.tag == b'D')
            .map(|m| m.data_row())
            .collect();
        assert_eq!(rows, vec![vec![Some("0".to_owned())]]);
    }
    still_serving(&env).await;
}

#[tokio::test]
async fn a_burst_of_garbage_connections_in_parallel() {
    let env = start().await;
    let port = env.perseus.port();
    let mut rng = Rng(0xf100d);
    let cases: Vec<Vec<u8>> = (0..80)
        .map(|i| {
            let mut b = rng.some_bytes(2000);
            if b[0] == 0x16 {
                b[0] = 0;
            }
            // Every fourth is a plausible startup header with a random body.
            if i % 4 == 0 && b.len() >= 8 {
                let len = b.len().min(10_000) as i32;
                b[..4].copy_from_slice(&be32(len));
                b[4..8].copy_from_slice(&be32(196_608));
            }
            b
        })
        .collect();
    let mut tasks = Vec::new();
    for bytes in cases {
        tasks.push(tokio::spawn(async move {
            send_and_wait_close(port, &bytes, LOGIN_TIMEOUT + SLACK).await
        }));
    }
    let (_, ()) = tokio::join!(
        async {
            for t in tasks {
                t.await.expect("a garbage connection task panicked");
            }
        },
        still_serving(&env)
    );
    still_serving(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_disconnected_after_the_idle_timeout_and_active_ones_are_not() {
    let env = Env::start_with(&["idle_a"], |config| {
        config.pool = pool(2);
        config.client.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut w = logged_in(&env, env.tenant(0)).await;
    // Busy for three idle timeouts: every query restarts the clock.
    let busy_until = Instant::now() + Duration::from_secs(3);
    let mut went_idle = Instant::now();
    while Instant::now() < busy_until {
        let got = w.query("SELECT 1").await;
        went_idle = Instant::now();
        assert!(tags(&got).ends_with("CZ"), "{got:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then idle: told why (57P05, as PostgreSQL's idle_session_timeout), then closed.
    let m = w.recv().await.expect("an ErrorResponse before the close");
    assert_eq!(m.tag, b'E', "{m:?}");
    assert_eq!(m.code(), "57P05", "{}", m.message());
    assert!(w.closed().await);
    let took = went_idle.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "disconnected after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_idle_in_a_transaction_is_cut_and_its_server_connection_freed() {
    let env = Env::start_with(&["idle_txn"], |config| {
        config.pool = pool(1);
        config.client.idle_in_transaction_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stuck = logged_in(&env, env.tenant(0)).await;
    assert!(tags(&stuck.query("BEGIN").await).ends_with("CZ"));
    let got = stuck.query("INSERT INTO t VALUES (42)").await;
    assert!(tags(&got).ends_with("CZ"), "{got:?}");
    let began = Instant::now();
    // The only server connection is held: another client waits until the stuck one is cut.
    let other = env.connect(env.tenant(0)).await;
    let rows = tokio::time::timeout(
        Duration::from_secs(20),
        other.query("SELECT v FROM t ORDER BY v", &[]),
    )
    .await
    .expect("the pool was never freed")
    .expect("query after the cut");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}"
    );
    // The stuck transaction was rolled back, not committed.
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, vec![0]);
    let m = stuck
        .recv()
        .await
        .expect("an ErrorResponse before the close");
    assert_eq!(m.tag, b'E', "{m:?}");
    assert_eq!(m.code(), "25P03", "{}", m.message());
    assert!(stuck.closed().await);
}
