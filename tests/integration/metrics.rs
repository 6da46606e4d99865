//! The operator's view of a running daemon: Prometheus metrics under the Go daemon's names for
//! a live pool, `/health` following the auth DB, and systemd readiness notifications.

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::env::TenantEnv;
use support::proc::{Watchdog, wait_timeout};
use support::tenant::apply_migrations;
use support::{Perseus, PgCluster, free_port_pair, poll_async, port_accepts, unique_name};

/// Generous bound for one HTTP exchange on a loaded CI machine.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

struct HttpReply {
    status: u16,
    content_type: String,
    body: String,
}

/// One GET over a fresh connection (`Connection: close`, so the body ends at EOF).
async fn http_get(port: u16, path: &str) -> HttpReply {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect to the metrics port {port}: {e}"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send the request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read the response");
        raw
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no response within {HTTP_TIMEOUT:?}"));
    let text = String::from_utf8(raw).expect("the response is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header/body separator in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    HttpReply {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// One sample line of the text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn malformed(line: &str) -> ! {
    panic!("malformed exposition line {line:?}")
}

/// Parses every sample line; panics on a line that is not valid exposition syntax, so a
/// malformed exposition fails the test.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| malformed(line));
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            malformed(line);
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let (key, after) = r.split_once("=\"").unwrap_or_else(|| malformed(line));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => malformed(line),
                        },
                        Some((_, c)) => value.push(c),
                        None => malformed(line),
                    }
                };
                labels.insert(key.to_owned(), value);
                r = &after[end + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
            rest = r;
        }
        let value = rest
            .trim()
            .split(' ')
            .next()
            .unwrap_or_else(|| malformed(line));
        let value: f64 = value.parse().unwrap_or_else(|_| malformed(line));
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)], text: &str) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{text}"))
        .value
}

/// The Go daemon's per-pool series, exactly as its dashboards name them.
const GO_SERIES: [&str; 9] = [
    "perseus_max_open_connections",
    "perseus_open_connections",
    "perseus_in_use_connections",
    "perseus_idle_connections",
    "perseus_wait_count_total",
    "perseus_wait_duration_seconds_total",
    "perseus_max_idle_closed_total",
    "perseus_max_idle_time_closed_total",
    "perseus_max_lifetime_closed_total",
];

#[tokio::test]
async fn metrics_carry_the_go_series_for_a_live_pool() {
    let world = TenantEnv::new(&["metrics_a"]).await;
    let mut config = world.config();
    config.pool.max_open = 7;
    config.pool.max_idle = 7;
    let perseus = Perseus::start(&config);

    // Before any client: the families are described, no pool series yet, zeroed auth results.
    let before = http_get(perseus.metrics_port(), "/metrics").await;
    assert_eq!(before.status, 200, "{}", before.body);
    assert!(
        before
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        before.content_type
    );
    assert!(before.body.ends_with("# EOF\n"), "{}", before.body);
    let samples = parse_exposition(&before.body);
    assert!(find(&samples, "perseus_open_connections", &[]).is_none());
    assert_eq!(
        value(
            &samples,
            "perseus_auth_results_total",
            &[("result", "ok")],
            &before.body
        ),
        0.0
    );

    let (client, conn) =
        tokio_postgres::connect(&world.dsn(perseus.port(), 0), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect through perseus: {e}\n{}", perseus.log()));
    tokio::spawn(conn);
    for _ in 0..5 {
        let rows = client.simple_query("SELECT v FROM t").await.unwrap();
        assert!(!rows.is_empty());
    }
    let row = client
        .query_one("SELECT 1 + $1::int", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // A refused login is counted under its reason.
    let mut wrong = world.dsn(perseus.port(), 0);
    wrong = wrong.replace("password=pw-0", "password=nope");
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err()
    );

    let reply = http_get(perseus.metrics_port(), "/metrics").await;
    assert_eq!(reply.status, 200);
    let text = &reply.body;
    let samples = parse_exposition(text);
    let host = world.pg.host_port();
    let labels = [
        ("dest_host", host.as_str()),
        ("dest_db", world.dest_db.as_str()),
    ];
    for name in GO_SERIES {
        let s = find(&samples, name, &labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"));
        assert_eq!(
            s.labels.keys().collect::<Vec<_>>(),
            ["dest_db", "dest_host"],
            "{name} must carry exactly dest_host and dest_db"
        );
        assert!(s.value >= 0.0, "{s:?}");
    }
    let v = |name: &str| value(&samples, name, &labels, text);
    assert_eq!(v("perseus_max_open_connections"), 7.0);
    let open = v("perseus_open_connections");
    assert!(open >= 1.0, "open {open}\n{text}");
    assert!(open <= 7.0, "open {open}\n{text}");
    assert_eq!(
        v("perseus_in_use_connections") + v("perseus_idle_connections"),
        open,
        "{text}"
    );
    assert!(v("perseus_search_path_sets_total") >= 1.0, "{text}");
    assert!(v("perseus_checkouts_total") >= 6.0, "{text}");
    // Counters never carry a doubled suffix.
    assert!(!text.contains("_total_total"), "{text}");
    // Every series appears once.
    for (i, a) in samples.iter().enumerate() {
        assert!(
            !samples[i + 1..]
                .iter()
                .any(|b| b.name == a.name && b.labels == a.labels),
            "duplicate series {a:?}"
        );
    }

    let global = |name: &str, l: &[(&str, &str)]| value(&samples, name, l, text);
    assert_eq!(
        global("perseus_auth_results_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        global(
            "perseus_auth_results_total",
            &[("result", "wrong_password")]
        ),
        1.0
    );
    assert_eq!(global("perseus_client_connections_active", &[]), 1.0);
    assert!(global("process_resident_memory_bytes", &[]) > 1e6, "{text}");
    assert!(global("process_open_fds", &[]) >= 3.0, "{text}");
    assert!(global("process_cpu_seconds_total", &[]) >= 0.0, "{text}");
    let build = find(&samples, "perseus_build_info", &[])
        .unwrap_or_else(|| panic!("no perseus_build_info in\n{text}"));
    assert_eq!(
        build.labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // The active-client gauge follows the session's end.
    drop(client);
    let port = perseus.metrics_port();
    let gone = poll_async(
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let r = http_get(port, "/metrics").await;
            let s = parse_exposition(&r.body);
            (value(&s, "perseus_client_connections_active", &[], &r.body) == 0.0).then_some(())
        },
    )
    .await;
    assert!(gone.is_some(), "active clients never went back to 0");

    let missing = http_get(perseus.metrics_port(), "/nope").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn health_follows_the_auth_database() {
    let (_, moto) = support::shared_pg_and_moto();
    // The auth DB on a cluster of its own, so stopping it leaves the shared one alone.
    let auth_pg = PgCluster::start();
    let auth_db = unique_name("auth");
    auth_pg.create_database(&auth_db);
    apply_migrations(&auth_pg.connect(&auth_db).await).await;
    let perseus = Perseus::start(&support::perseus::config(&auth_pg, &auth_db, moto));
    let port = perseus.metrics_port();

    let up = http_get(port, "/health").await;
    assert_eq!(up.status, 200, "{}\n{}", up.body, perseus.log());
    assert_eq!(up.content_type, "application/json");
    let doc: Value = serde_json::from_str(&up.body).expect("/health is JSON");
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"), "{doc}");
    assert!(doc["build"]["commit"].is_string(), "{doc}");
    assert_eq!(doc["auth_db"]["reachable"], true, "{doc}");

    auth_pg.stop();
    let down = poll_async(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let r = http_get(port, "/health").await;
            (r.status != 200).then_some(r)
        },
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "/health stayed 200 with the auth DB down\n{}",
            perseus.log()
        )
    });
    assert_eq!(down.status, 503, "{}", down.body);
    let doc: Value = serde_json::from_str(&down.body).expect("/health is JSON");
    assert_eq!(doc["auth_db"]["reachable"], false, "{doc}");
    assert_eq!(doc["status"], "degraded", "{doc}");

    auth_pg.restart();
    let back = poll_async(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (http_get(port, "/health").await.status == 200).then_some(()) },
    )
    .await;
    assert!(
        back.is_some(),
        "/health never recovered after the auth DB came back\n{}",
        perseus.log()
    );
}

/// Receives one sd_notify datagram, failing the test after `timeout`.
fn recv_notification(sock: &UnixDatagram, timeout: Duration, log: &std::path::Path) -> String {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "no sd_notify message within {timeout:?} ({e}); daemon output:\n{}",
            support::log_tail(log, 60)
        )
    });
    String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8")
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or_default()
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let (pg, moto) = support::shared_pg_and_moto();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let (port, metrics_port) = free_port_pair();
    let mut config =
        serde_json::to_value(support::perseus::config(pg, &unique_name("auth"), moto)).unwrap();
    config["ListenAddress"] = format!("127.0.0.1:{port}").into();
    config["MetricsAddress"] = format!("127.0.0.1:{metrics_port}").into();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log_path = dir.path().join("perseus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = support::perseus::command()
        .arg("--config")
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start perseus");
    let watchdog = Watchdog::spawn(
        &["kill".into(), "-KILL".into(), child.id().to_string().into()],
        None,
    );
    let wait = Duration::from_secs(30);

    let ready = recv_notification(&sock, wait, &log_path);
    assert_eq!(first_line(&ready), "READY=1", "{ready}");
    // READY means listening: a client can connect at once.
    assert!(
        port_accepts(port),
        "READY=1 came before the listener was open"
    );

    support::proc::send_signal(child.id(), libc::SIGHUP).unwrap();
    let reloading = recv_notification(&sock, wait, &log_path);
    assert_eq!(first_line(&reloading), "RELOADING=1", "{reloading}");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    let ready = recv_notification(&sock, wait, &log_path);
    assert_eq!(first_line(&ready), "READY=1", "{ready}");

    support::proc::send_signal(child.id(), libc::SIGTERM).unwrap();
    let stopping = recv_notification(&sock, wait, &log_path);
    assert_eq!(first_line(&stopping), "STOPPING=1", "{stopping}");
    let status = wait_timeout(&mut child, wait).unwrap_or_else(|| {
        panic!(
            "perseus did not exit after SIGTERM\n{}",
            support::log_tail(&log_path, 60)
        )
    });
    watchdog.disarm();
    assert!(status.success(), "exit status {status}");
}
