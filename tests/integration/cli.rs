//! The `perseus` binary's command line, run as a child process.

use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json");
const GO_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/perseus-go-config.sample.json"
);

/// Runs the daemon binary with a clean environment plus `env`, in `dir`.
fn perseus(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perseus"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("the perseus binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_prints_redacted_config_and_exits_zero() {
    let secret = "wJalrXUtnFEMI/K7MDENG";
    let env = [
        ("PERSEUS_AWSSETTINGS_ACCESSKEYID", "AKIDEXAMPLE"),
        ("PERSEUS_AWSSETTINGS_SECRETACCESSKEY", secret),
        ("PERSEUS_POOLSETTINGS_MAXOPEN", "21"),
        ("PERSEUS_POOLSETTINGS_MAXOPN", "22"),
    ];
    let out = perseus(&["--config", EXAMPLE, "--check"], &env, here());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "--check failed: {stderr}");
    let printed: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the JSON config");
    assert_eq!(
        printed["PoolSettings"]["MaxOpen"], 21,
        "env overrides are applied before printing"
    );
    assert_eq!(printed["AWSSettings"]["SecretAccessKey"], "<redacted>");
    assert_eq!(printed["AWSSettings"]["AccessKeyId"], "AKIDEXAMPLE");
    let dsn = printed["AuthDBSettings"]["AuthDBDSN"].as_str().unwrap();
    assert!(
        dsn.starts_with("postgres://perseus:<redacted>@localhost:5432/perseus?"),
        "{dsn}"
    );
    for leaked in [secret, "CHANGE-ME"] {
        assert!(
            !stdout.contains(leaked) && !stderr.contains(leaked),
            "{leaked} was printed"
        );
    }
    assert!(stderr.contains("configuration is valid"), "{stderr}");
    assert!(
        stderr.contains("note: PERSEUS_POOLSETTINGS_MAXOPN matches no configuration key"),
        "a mistyped variable is pointed out: {stderr}"
    );
}

#[test]
fn check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(
        &path,
        r#"{"ListenAddress": "nope", "Bogus": 1,
            "AuthDBSettings": {"AuthDBDSN": "postgres://u:hunter2@h/d?pool_max_conns=-1"},
            "PoolSettings": {"MaxOpen": 0, "Extra": true},
            "LogSettings": {"Level": "loud"}}"#,
    )
    .unwrap();
    let env = [("PERSEUS_POOLSETTINGS_MAXIDLE", "lots")];
    let out = perseus(
        &["--config", path.to_str().unwrap(), "--check"],
        &env,
        here(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout when invalid");
    for needle in [
        "unknown key `Bogus` in the top-level object",
        "unknown key `Extra` in PoolSettings",
        "ListenAddress: `nope` lacks a port",
        "AuthDBSettings.AuthDBDSN: pool_max_conns must be",
        "PoolSettings.MaxOpen: must be at least 1",
        "LogSettings.Level: `loud` is not one of",
        "environment variable PERSEUS_POOLSETTINGS_MAXIDLE",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(stderr.contains("7 problems"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("  - ")).count(),
        7,
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));
}

#[test]
fn go_single_dash_flags_work() {
    for args in [
        vec!["-config", GO_SAMPLE, "-check"],
        vec![&format!("-config={GO_SAMPLE}") as &str, "-check"],
        vec!["--config", GO_SAMPLE, "--check"],
    ] {
        let out = perseus(&args, &[], here());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("\"MaxOpen\": 5"), "{args:?}");
    }
}

#[test]
fn default_config_path_is_config_slash_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = perseus(&["-check"], &[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("config/config.json"),
        "{}",
        text(&out.stderr)
    );
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::copy(GO_SAMPLE, dir.path().join("config/config.json")).unwrap();
    let out = perseus(&["-check"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn version_and_help() {
    for flag in ["--version", "-version", "-V"] {
        let out = perseus(&[flag], &[], here());
        assert!(out.status.success());
        assert_eq!(
            text(&out.stdout).trim(),
            format!("perseus {}", env!("CARGO_PKG_VERSION"))
        );
    }
    for flag in ["--help", "-help", "-h"] {
        let out = perseus(&[flag], &[], here());
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("--config <PATH>")
                && help.contains("--check")
                && help.contains("--migrate")
        );
    }
}

#[test]
fn usage_errors_exit_two() {
    for args in [&["--bogus"][..], &["-check", "-migrate"], &["--config"]] {
        let out = perseus(args, &[], here());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn migrate_reports_an_unreachable_auth_db() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dsn = format!("postgres://u:hunter2@127.0.0.1:{port}/d?sslmode=disable&connect_timeout=5");
    let env = [("PERSEUS_AUTHDBSETTINGS_AUTHDBDSN", dsn.as_str())];
    let out = perseus(&["-config", GO_SAMPLE, "-migrate"], &env, here());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to the auth DB"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // TLS to the auth DB is supported: sslmode=require gets as far as connecting.
    let dsn = format!("postgres://u:p@127.0.0.1:{port}/d?sslmode=require&connect_timeout=5");
    let env = [("PERSEUS_AUTHDBSETTINGS_AUTHDBDSN", dsn.as_str())];
    let out = perseus(&["--config", GO_SAMPLE, "--migrate"], &env, here());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect to the auth DB"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_normal_run_with_a_broken_config_exits_one_before_starting() {
    let out = perseus(
        &["--config", GO_SAMPLE],
        &[("PERSEUS_POOLSETTINGS_MAXOPEN", "0")],
        here(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("PoolSettings.MaxOpen: must be at least 1"));
}
