//! The auth-DB DSN (pgxpool parameters, TLS modes) and keeping secrets out of output.

use std::time::Duration;

use perseus::config::{self, AuthDbSettings, AuthPoolParams, Config, TlsVerify};
use tokio_postgres::config::{Host, SslMode};

fn dsn(s: &str) -> AuthDbSettings {
    AuthDbSettings {
        dsn: s.into(),
        ..AuthDbSettings::default()
    }
}

fn dsn_error(s: &str) -> String {
    let e = dsn(s).parse_dsn().expect_err("DSN should be rejected");
    let msg = e.to_string();
    assert!(msg.starts_with("AuthDBSettings.AuthDBDSN: "), "{msg}");
    msg
}

#[test]
fn pool_params_are_parsed_and_stripped() {
    let (pg, params) = dsn(
        "postgres://perseus:pw@db.internal:6432/auth?sslmode=disable&pool_max_conns=12\
         &pool_min_conns=2&pool_max_conn_lifetime=1h30m&pool_max_conn_idle_time=5m\
         &pool_health_check_period=500ms&application_name=perseus",
    )
    .parse_dsn()
    .expect("DSN with pool params must parse");
    // tokio-postgres rejects unknown options, so reaching here shows none of pool_* was passed on.
    assert_eq!(pg.get_user(), Some("perseus"));
    assert_eq!(pg.get_password(), Some(&b"pw"[..]));
    assert_eq!(pg.get_dbname(), Some("auth"));
    assert_eq!(pg.get_hosts(), [Host::Tcp("db.internal".into())]);
    assert_eq!(pg.get_ports(), [6432]);
    assert_eq!(pg.get_ssl_mode(), SslMode::Disable);
    assert_eq!(pg.get_application_name(), Some("perseus"));
    assert!(!format!("{pg:?}").contains("pool_"));
    assert_eq!(params.max_conns, 12);
    assert_eq!(params.min_conns, 2);
    assert_eq!(params.max_conn_lifetime, Duration::from_secs(5400));
    assert_eq!(params.max_conn_idle_time, Duration::from_secs(300));
    assert_eq!(params.health_check_period, Duration::from_millis(500));
    assert_eq!(params.tls.verify, TlsVerify::None);
    assert!(!params.tcp_in_dsn, "no keepalive parameter given");
}

#[test]
fn keepalive_parameters_in_the_dsn_are_kept_and_noted() {
    for (query, given) in [
        ("keepalives=0", true),
        ("keepalives_idle=30", true),
        ("tcp_user_timeout=5000", true),
        ("application_name=x", false),
    ] {
        let (pg, params) = dsn(&format!("postgres://u:p@h/d?{query}"))
            .parse_dsn()
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(params.tcp_in_dsn, given, "{query}");
        if query == "keepalives_idle=30" {
            assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(30));
        }
    }
}

#[test]
fn absent_pool_params_take_pgxpool_defaults() {
    let (_, params) = dsn("postgres://u:p@h/d").parse_dsn().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(params.max_conns, cpus.max(4));
    assert_eq!(params.min_conns, 0);
    assert_eq!(params.max_conn_lifetime, Duration::from_secs(3600));
    assert_eq!(params.max_conn_idle_time, Duration::from_secs(1800));
    assert_eq!(params.health_check_period, Duration::from_secs(60));
    assert_eq!(params, AuthPoolParams::default());
}

#[test]
fn keyword_form_is_supported_too() {
    let (pg, params) = dsn(
        "host=h port=5433 user=u password='p w' dbname=d pool_max_conns=3 sslmode=verify-full \
         sslrootcert=/etc/ssl/rds.pem",
    )
    .parse_dsn()
    .unwrap();
    assert_eq!(pg.get_password(), Some(&b"p w"[..]));
    assert_eq!(pg.get_ssl_mode(), SslMode::Require, "verify-full needs TLS");
    assert_eq!(params.max_conns, 3);
    assert_eq!(params.tls.verify, TlsVerify::Full);
    assert_eq!(
        params.tls.root_cert.as_deref(),
        Some(std::path::Path::new("/etc/ssl/rds.pem"))
    );
    let (pg, params) = dsn("postgresql://u:p@h/d?sslmode=verify-ca")
        .parse_dsn()
        .unwrap();
    assert_eq!(
        (pg.get_ssl_mode(), params.tls.verify),
        (SslMode::Require, TlsVerify::Ca)
    );
}

#[test]
fn bad_dsns_are_explained_without_the_password() {
    for (bad, needle) in [
        (
            "postgres://u:hunter2@h/d?pool_max_conns=0",
            "pool_max_conns must be a whole number of at least 1",
        ),
        ("postgres://u:hunter2@h/d?pool_max_conns=x", "got `x`"),
        (
            "postgres://u:hunter2@h/d?pool_max_conn_lifetime=5",
            "pool_max_conn_lifetime: `5` lacks a unit",
        ),
        (
            "postgres://u:hunter2@h/d?pool_health_check_period=1d",
            "unknown unit `d`",
        ),
        (
            "postgres://u:hunter2@h/d?pool_min_conns=9&pool_max_conns=4",
            "pool_min_conns (9) is larger",
        ),
        (
            "postgres://u:hunter2@h/d?sslmode=maybe",
            "sslmode `maybe` is not one of",
        ),
        ("postgres://u:hunter2@h/d?sslcert=/c.pem", "not supported"),
        (
            "postgres://u:hunter2@h/d?frobnicate=1",
            "unknown option `frobnicate`",
        ),
        ("postgres://u:hunter2@/d", "names no host"),
        ("postgres://h/d?password=hunter2", "names no user"),
        ("host=h password='hunter2", "not closed"),
        ("   ", "is empty"),
    ] {
        let msg = dsn_error(bad);
        assert!(msg.contains(needle), "{bad}: {msg}");
        assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    }
}

#[test]
fn redacted_dsn_hides_every_password_form() {
    for (raw, want) in [
        (
            "postgres://u:hunter2@h:5432/d?sslmode=disable",
            "postgres://u:<redacted>@h:5432/d?sslmode=disable",
        ),
        ("postgres://u:hun?ter2@h/d", "postgres://u:<redacted>@h/d"),
        (
            "postgres://u@h/d?password=hunter2&sslmode=disable",
            "postgres://u@h/d?password=<redacted>&sslmode=disable",
        ),
        (
            "host=h password='hunter2 x' user=u",
            "host=h password='<redacted>' user=u",
        ),
        ("postgres://h/d", "postgres://h/d"),
        ("host=h password='hunter2", "<redacted> (unparseable DSN)"),
    ] {
        assert_eq!(dsn(raw).redacted_dsn(), want);
    }
}

#[test]
fn secrets_never_appear_in_printed_config() {
    let text = r#"{"AuthDBSettings": {"AuthDBDSN": "postgres://u:hunter2@localhost/d"},
                   "AWSSettings": {"AccessKeyId": "AKID", "SecretAccessKey": "wJalrXUtnFEMI"}}"#;
    let c: Config = config::parse(text, [("PERSEUS_AWSSETTINGS_REGION", "eu-west-1")]).unwrap();
    let printed = [
        c.redacted_json(),
        c.redacted().to_string(),
        format!("{c:?}"),
        format!("{c:#?}"),
    ];
    for out in &printed {
        assert!(
            !out.contains("hunter2") && !out.contains("wJalrXUtnFEMI"),
            "secret leaked: {out}"
        );
        assert!(out.contains("<redacted>"), "{out}");
        assert!(
            out.contains("AKID") && out.contains("eu-west-1"),
            "non-secrets stay visible: {out}"
        );
    }
    let v = c.redacted();
    assert_eq!(v["AWSSettings"]["SecretAccessKey"], "<redacted>");
    assert_eq!(
        v["AuthDBSettings"]["AuthDBDSN"],
        "postgres://u:<redacted>@localhost/d"
    );
    // The printed form is itself a loadable config (secrets aside), keys in Go order.
    assert!(
        c.redacted_json()
            .trim_start()
            .starts_with("{\n  \"ListenAddress\"")
    );
    let reparsed = config::parse(&c.redacted_json(), [("X", "")]).unwrap();
    assert_eq!(reparsed.pool, c.pool);
}
