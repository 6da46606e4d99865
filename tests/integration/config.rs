//! Loading, environment overrides and validation of `config.json`, from the outside.

use std::path::Path;
use std::time::Duration;

use perseus::config::{self, Config, ConfigError, ConfigErrors};

const GO_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/perseus-go-config.sample.json"
);
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json");
const MINIMAL: &str = r#"{"AuthDBSettings": {"AuthDBDSN": "postgres://u:pw@localhost/db"}}"#;
const NO_ENV: [(&str, &str); 0] = [];

fn messages(result: Result<Config, ConfigErrors>) -> Vec<String> {
    match result {
        Ok(_) => panic!("expected configuration problems, got a valid configuration"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_mentions(msgs: &[String], needle: &str) {
    assert!(
        msgs.iter().any(|m| m.contains(needle)),
        "no problem mentions {needle:?}; problems: {msgs:#?}"
    );
}

/// A document with one section's JSON replaced, the DSN kept valid.
fn with(section: &str, body: &str) -> String {
    format!(
        r#"{{"AuthDBSettings": {{"AuthDBDSN": "postgres://u:pw@localhost/db"}}, "{section}": {body}}}"#
    )
}

#[test]
fn go_sample_loads_unchanged_with_its_values() {
    let c = config::load_with_env(Path::new(GO_SAMPLE), NO_ENV).expect("Go sample must load");
    assert_eq!(c.listen_address, ":5433");
    assert_eq!(c.metrics_address, ":5000");
    assert_eq!(
        c.auth_db.dsn,
        "postgres://mmuser:mostest@localhost:5432/loadtest?sslmode=disable"
    );
    assert_eq!(c.auth_db.query_timeout, Duration::from_secs(2));
    assert_eq!(
        c.auth_db.cache_ttl,
        Duration::from_secs(60),
        "missing key takes its default"
    );
    assert_eq!(c.aws.region, "us-east-1");
    assert_eq!(c.aws.secret_access_key, "");
    let p = &c.pool;
    assert_eq!((p.max_idle, p.max_open), (3, 5));
    assert_eq!(p.max_lifetime, Duration::from_secs(3600));
    assert_eq!(p.max_idle_time, Duration::from_secs(300));
    assert_eq!(p.conn_create_timeout, Duration::from_secs(5));
    assert_eq!(p.conn_close_timeout, Duration::from_secs(1));
    assert_eq!(p.schema_exec_timeout, Duration::from_secs(5));
    assert_eq!(p.wait_timeout, Duration::from_secs(30));
    assert!(c.overrides.is_empty());
    assert_eq!(c.log.level, "INFO");
    assert!(c.log.json);
    assert_eq!(c.log.tracing_level(), Ok(tracing::Level::INFO));
}

#[test]
fn example_config_is_complete_and_valid() {
    let c =
        config::load_with_env(Path::new(EXAMPLE), NO_ENV).expect("config.example.json must load");
    let o = c
        .overrides
        .get("db-large.internal:5432/app")
        .expect("example shows an override");
    assert_eq!(o.max_open, Some(40));
    let eff = c.pool_settings_for("db-large.internal:5432", "app");
    assert_eq!(
        (eff.max_idle, eff.max_open, eff.wait_timeout),
        (10, 40, c.pool.wait_timeout)
    );
    // Every key the daemon knows appears in the example.
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    for var in config::env_var_names() {
        let key = var.rsplit('_').next().unwrap();
        assert!(
            text.to_uppercase().contains(&format!("\"{key}\"")),
            "example lacks the key behind {var}"
        );
    }
}

#[test]
fn unknown_keys_are_named_with_their_section_all_at_once() {
    let text = r#"{"Foo": 1, "AuthDBSettings": {"AuthDBDSN": "postgres://u:p@h/d"},
                   "PoolSettings": {"MaxOpne": 3}, "OverrideSettings": {"h/d": {"Bar": 1}}}"#;
    let msgs = messages(config::parse(text, NO_ENV));
    assert_mentions(&msgs, "unknown key `Foo` in the top-level object");
    assert_mentions(&msgs, "unknown key `MaxOpne` in PoolSettings");
    assert_mentions(&msgs, "unknown key `Bar` in OverrideSettings[\"h/d\"]");
    assert_mentions(&msgs, "known keys: ConnCloseTimeoutSecs");
}

#[test]
fn keys_match_case_insensitively_like_go() {
    let text = r#"{"listenaddress": "127.0.0.1:6000", "authdbsettings": {"authdbdsn": "postgres://u:p@h/d"},
                   "POOLSETTINGS": {"maxopen": 9}}"#;
    let c = config::parse(text, NO_ENV).unwrap();
    assert_eq!(c.listen_address, "127.0.0.1:6000");
    assert_eq!(c.pool.max_open, 9);
    let dup = r#"{"MaxOpen": 1, "maxopen": 2}"#;
    assert_mentions(
        &messages(config::parse(&with("PoolSettings", dup), NO_ENV)),
        "both mean `MaxOpen`",
    );
}

#[test]
fn nulls_and_missing_keys_take_defaults() {
    let c = config::parse(&with("PoolSettings", r#"{"MaxOpen": null}"#), NO_ENV).unwrap();
    assert_eq!(c.pool, perseus::config::PoolSettings::default());
    assert_eq!(
        config::parse(MINIMAL, NO_ENV).unwrap().listen_address,
        ":5433"
    );
}

#[test]
fn environment_wins_over_the_file() {
    let env = [
        ("PERSEUS_LISTENADDRESS", "127.0.0.1:7000"),
        ("PERSEUS_METRICSADDRESS", ""),
        (
            "PERSEUS_AUTHDBSETTINGS_AUTHDBDSN",
            "postgres://env:pw@envhost/envdb",
        ),
        ("PERSEUS_AUTHDBSETTINGS_AUTHQUERYTIMEOUTSECS", "7"),
        ("PERSEUS_AWSSETTINGS_ACCESSKEYID", "AKID"),
        ("PERSEUS_AWSSETTINGS_SECRETACCESSKEY", "s3cr3t"),
        ("PERSEUS_POOLSETTINGS_MAXOPEN", "20"),
        ("PERSEUS_POOLSETTINGS_WAITTIMEOUTSECS", "9"),
        ("PERSEUS_LOGSETTINGS_JSON", "false"),
        ("PERSEUS_LOGSETTINGS_LEVEL", "debug"),
        ("UNRELATED", "x"),
    ];
    let c = config::load_with_env(Path::new(GO_SAMPLE), env).unwrap();
    assert_eq!(c.listen_address, "127.0.0.1:7000");
    assert_eq!(c.metrics_address, "");
    assert!(
        c.metrics_addrs().unwrap().is_empty(),
        "empty MetricsAddress disables metrics"
    );
    assert_eq!(c.auth_db.dsn, "postgres://env:pw@envhost/envdb");
    assert_eq!(c.auth_db.query_timeout, Duration::from_secs(7));
    assert_eq!(c.aws.secret_access_key, "s3cr3t");
    assert_eq!(c.pool.max_open, 20);
    assert_eq!(
        c.pool.max_idle, 3,
        "keys without a variable keep the file's value"
    );
    assert_eq!(c.pool.wait_timeout, Duration::from_secs(9));
    assert!(!c.log.json);
    assert_eq!(c.log.tracing_level(), Ok(tracing::Level::DEBUG));
}

#[test]
fn bad_environment_values_name_the_variable() {
    let env = [
        ("PERSEUS_POOLSETTINGS_MAXOPEN", "many"),
        ("PERSEUS_POOLSETTINGS_MAXIDLE", "99999999999"),
        ("PERSEUS_LOGSETTINGS_JSON", "yes"),
    ];
    let msgs = messages(config::parse(MINIMAL, env));
    assert_mentions(
        &msgs,
        "environment variable PERSEUS_POOLSETTINGS_MAXOPEN: `many` is not a whole number",
    );
    assert_mentions(
        &msgs,
        "environment variable PERSEUS_POOLSETTINGS_MAXIDLE: invalid value",
    );
    assert_mentions(
        &msgs,
        "environment variable PERSEUS_LOGSETTINGS_JSON: `yes` is not a boolean",
    );
    let unknown = config::unknown_env_vars([
        ("PERSEUS_POOLSETTINGS_MAXOPN", "1"),
        ("PERSEUS_LISTENADDRESS", ":1"),
    ]);
    assert_eq!(unknown, ["PERSEUS_POOLSETTINGS_MAXOPN"]);
    assert!(config::env_var_names().contains(&"PERSEUS_AUTHDBSETTINGS_CACHETTLSECS".to_string()));
}

#[test]
fn every_invalid_value_is_explained() {
    let text = r#"{
        "ListenAddress": "5433", "MetricsAddress": "[::1]",
        "AuthDBSettings": {"AuthDBDSN": "", "AuthQueryTimeoutSecs": 0},
        "AWSSettings": {"AccessKeyId": "AKID", "Endpoint": "ftp://kms"},
        "PoolSettings": {"MaxOpen": 2, "MaxIdle": 3, "ConnCreateTimeoutSecs": 0, "ConnCloseTimeoutSecs": 0,
                         "SchemaExecTimeoutSecs": 0, "WaitTimeoutSecs": 0, "MaxLifetimeSecs": 999999999999},
        "OverrideSettings": {"nohost": {}, "h:0/db": {}, "h/db": {"MaxOpen": 0}},
        "LogSettings": {"Level": "verbose", "Json": "yes"}
    }"#;
    let msgs = messages(config::parse(text, NO_ENV));
    for needle in [
        "ListenAddress: `5433` lacks a port",
        "MetricsAddress: `[::1]` lacks a port",
        "AuthDBSettings.AuthDBDSN: is empty",
        "AuthDBSettings.AuthQueryTimeoutSecs: must be at least 1 second",
        "AWSSettings: set both AccessKeyId and SecretAccessKey",
        "AWSSettings.Endpoint: `ftp://kms` is not an http:// or https:// URL",
        "PoolSettings.MaxIdle: 3 is larger than MaxOpen (2)",
        "PoolSettings.ConnCreateTimeoutSecs: must be at least 1 second",
        "PoolSettings.ConnCloseTimeoutSecs: must be at least 1 second",
        "PoolSettings.SchemaExecTimeoutSecs: must be at least 1 second",
        "PoolSettings.WaitTimeoutSecs: must be at least 1 second",
        "PoolSettings.MaxLifetimeSecs: 999999999999 seconds is more than the limit",
        "OverrideSettings[\"nohost\"]: the key has no `/`",
        "OverrideSettings[\"h:0/db\"]: port `0` is not a number from 1 to 65535",
        "OverrideSettings[\"h/db\"].MaxOpen: must be at least 1",
        "LogSettings.Level: `verbose` is not one of debug, info, warn, error",
        "LogSettings.Json: invalid type: string \"yes\", expected a boolean",
    ] {
        assert_mentions(&msgs, needle);
    }
    assert_eq!(msgs.len(), 17, "one message per problem: {msgs:#?}");
}

#[test]
fn tcp_settings_outside_the_kernels_bounds_are_explained() {
    let msgs = messages(config::parse(
        &with(
            "TCPSettings",
            r#"{"KeepaliveIdleSecs": 0, "KeepaliveIntervalSecs": 40000, "KeepaliveCount": 200,
                "UserTimeoutSecs": 5000000}"#,
        ),
        NO_ENV,
    ));
    for needle in [
        "TCPSettings.KeepaliveIdleSecs: must be between 1 and 32767 seconds",
        "TCPSettings.KeepaliveIntervalSecs: must be between 1 and 32767 seconds",
        "TCPSettings.KeepaliveCount: must be between 1 and 127",
        "TCPSettings.UserTimeoutSecs: must be at most 4294967 seconds",
    ] {
        assert_mentions(&msgs, needle);
    }
    assert_eq!(msgs.len(), 4, "one message per problem: {msgs:#?}");
    // Keepalive off: its timings are not used, so not checked.
    let off = config::parse(
        &with(
            "TCPSettings",
            r#"{"Keepalive": false, "KeepaliveIdleSecs": 0}"#,
        ),
        NO_ENV,
    )
    .expect("timings of a disabled keepalive are not checked");
    assert!(!off.tcp.keepalive);
}

#[test]
fn type_errors_speak_json() {
    let msgs = messages(config::parse(
        &with("PoolSettings", r#"{"MaxOpen": "5", "MaxIdle": -1}"#),
        NO_ENV,
    ));
    assert_mentions(
        &msgs,
        "PoolSettings.MaxOpen: invalid type: string \"5\", expected a whole number",
    );
    assert_mentions(
        &msgs,
        "PoolSettings.MaxIdle: invalid value: integer `-1`, expected a whole number",
    );
    let msgs = messages(config::parse(&with("PoolSettings", "[]"), NO_ENV));
    assert_mentions(&msgs, "PoolSettings: must be a JSON object, found an array");
}

#[test]
fn unreadable_and_malformed_files_are_reported() {
    let missing = config::load_with_env(Path::new("no/such/config.json"), NO_ENV).unwrap_err();
    assert!(
        matches!(&missing.0[..], [ConfigError::Read { path, .. }] if path == "no/such/config.json")
    );
    assert_mentions(
        &messages(config::parse("{\"ListenAddress\": ", NO_ENV)),
        "not valid JSON",
    );
    assert_mentions(
        &messages(config::parse("[1]", NO_ENV)),
        "expected a JSON object at the top, found an array",
    );
}

#[test]
fn listen_addrs_follow_go_semantics() {
    let mut c = config::parse(MINIMAL, NO_ENV).unwrap();
    let all: Vec<String> = c
        .listen_addrs()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(all, ["0.0.0.0:5433", "[::]:5433"]);
    c.listen_address = "[::1]:6543".into();
    assert_eq!(c.listen_addrs().unwrap()[0].to_string(), "[::1]:6543");
    c.listen_address = "localhost:6543".into();
    assert!(
        c.listen_addrs()
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback())
    );
    c.metrics_address = "localhost:6543".into();
    assert_mentions(
        &c.problems()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        "is also the ListenAddress",
    );
}
