//! Client TLS: with Mode=require, psql over TLS works and plaintext is refused before any
//! password is sent; with Mode=allow both work.

use crate::support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use perseus::config::{TlsMode, TlsSettings};
use support::Perseus;
use support::env::TenantEnv;
use support::pg_template::bindir;

fn write_cert(dir: &Path) -> TlsSettings {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("self-signed certificate");
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    TlsSettings {
        mode: TlsMode::Require,
        cert_file: c.display().to_string(),
        key_file: k.display().to_string(),
    }
}

fn psql(env: &TenantEnv, port: u16, sslmode: &str, sql: &str) -> Output {
    let t = &env.tenants[0];
    Command::new(bindir().join("psql"))
        .env_clear()
        .env("PGPASSWORD", &t.password)
        .env("PGSSLMODE", sslmode)
        .env("PGOPTIONS", format!("-c search_path={}", t.source_schema))
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            &t.source_user,
            "-d",
            &t.source_db,
        ])
        .args(["-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

#[tokio::test]
async fn require_mode_serves_tls_and_refuses_plaintext() {
    let env = TenantEnv::new(&["tls_a"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = env.config();
    config.tls = write_cert(dir.path());
    let perseus = Perseus::start(&config);

    let ok = psql(
        &env,
        perseus.port(),
        "require",
        "SELECT v, ssl FROM t, pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(
        ok.status.success(),
        "psql over TLS failed: {}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        perseus.log()
    );
    // The tenant's row arrives; the pooler-to-server leg is plaintext here (ssl = f).
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "0|f");

    let refused = psql(&env, perseus.port(), "disable", "SELECT 1");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("TLS is required"), "unexpected error: {err}");
}

#[tokio::test]
async fn allow_mode_serves_both() {
    let env = TenantEnv::new(&["tls_b"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = env.config();
    config.tls = TlsSettings {
        mode: TlsMode::Allow,
        ..write_cert(dir.path())
    };
    let perseus = Perseus::start(&config);
    for mode in ["require", "disable"] {
        let out = psql(&env, perseus.port(), mode, "SELECT v FROM t");
        assert!(
            out.status.success(),
            "sslmode={mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    }
}

#[tokio::test]
async fn broken_certificate_paths_fail_at_start() {
    let env = TenantEnv::new(&["tls_c"]).await;
    let mut config = env.config();
    config.tls = TlsSettings {
        mode: TlsMode::Require,
        cert_file: "/nonexistent/server.crt".into(),
        key_file: "/nonexistent/server.key".into(),
    };
    let err = match Perseus::try_start(&config) {
        Ok(_) => panic!("perseus started without its certificate"),
        Err(e) => e,
    };
    assert!(
        err.contains("server.crt"),
        "error does not name the file: {err}"
    );
}
