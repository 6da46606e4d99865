//! The test harness itself works: real clusters with SCRAM over TCP, several at once,
//! outages, the KMS emulator, and clean-up when a test process dies without unwinding.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use support::pg::{PgCluster, SUPERUSER, ServerAuth};
use support::{poll, port_accepts, shared_moto, shared_pg, unique_name};

#[tokio::test]
async fn cluster_answers_over_tcp_with_scram() {
    let pg = shared_pg();
    let client = pg.connect("postgres").await;
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    // TCP connections are checked with SCRAM, against a SCRAM verifier.
    let rules = client
        .query(
            "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND 'all' = ANY(user_name)",
            &[],
        )
        .await
        .unwrap();
    let methods: Vec<String> = rules.iter().map(|r| r.get(0)).collect();
    assert!(
        !methods.is_empty() && methods.iter().all(|m| m == "scram-sha-256"),
        "{methods:?}"
    );
    let stored: String = client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&SUPERUSER],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.starts_with("SCRAM-SHA-256$"),
        "superuser password is not SCRAM"
    );

    let err = pg
        .connect_as("postgres", SUPERUSER, "wrong password")
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("28P01"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn roles_can_use_scram_md5_or_cleartext() {
    let pg = shared_pg();
    let db = unique_name("roles");
    pg.create_database(&db);
    for (auth, prefix) in [
        (ServerAuth::Scram, "SCRAM-SHA-256$"),
        (ServerAuth::Md5, "md5"),
        (ServerAuth::Cleartext, "SCRAM-SHA-256$"),
    ] {
        let role = unique_name("role");
        let password = "pa'ss \"word";
        pg.create_role_with(&role, password, auth);
        let stored = pg.sql(
            "postgres",
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
        );
        assert!(
            stored.starts_with(prefix),
            "{auth:?}: stored as {stored:.12}..."
        );
        let client = pg
            .connect_as(&db, &role, password)
            .await
            .unwrap_or_else(|e| panic!("{auth:?} login: {e}"));
        let who: String = client
            .query_one("SELECT current_user", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, role);
        assert!(
            pg.connect_as(&db, &role, "nope").await.is_err(),
            "{auth:?} took a bad password"
        );
    }
}

#[test]
fn psql_runs_against_the_cluster() {
    let pg = shared_pg();
    let db = unique_name("psql");
    pg.create_database(&db);
    pg.sql(
        &db,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('a'), ('b')",
    );
    assert_eq!(
        pg.sql(&db, "SELECT string_agg(v, ',' ORDER BY v) FROM t"),
        "a,b"
    );
    let failed = pg.psql(&db, &["-c", "SELECT * FROM no_such_table"]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no_such_table"));
}

#[tokio::test]
async fn two_clusters_run_at_once_and_go_away_when_dropped() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    assert_ne!(a.port(), b.port());
    a.sql("postgres", "CREATE TABLE only_in_a (x int)");
    let b_client = b.connect("postgres").await;
    let found: i64 = b_client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 0, "clusters share state");

    let (a_port, a_dir) = (a.port(), a.dir().to_path_buf());
    drop(a);
    assert!(!port_accepts(a_port), "dropped cluster still listens");
    assert!(!a_dir.exists(), "dropped cluster left {}", a_dir.display());
    let one: i32 = b_client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn cluster_survives_stop_and_restart_on_the_same_port() {
    let pg = PgCluster::start();
    pg.sql(
        "postgres",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
    );
    let port = pg.port();
    pg.stop();
    assert!(!port_accepts(port));
    assert!(
        pg.connect_as("postgres", SUPERUSER, support::pg::SUPERUSER_PASSWORD)
            .await
            .is_err()
    );
    pg.restart();
    assert_eq!(pg.port(), port);
    let client = pg.connect("postgres").await;
    let x: i32 = client
        .query_one("SELECT x FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 7);
}

#[tokio::test]
async fn moto_answers_and_makes_kms_keys() {
    let moto = shared_moto();
    assert!(
        moto.key_arn().starts_with("arn:aws:kms:us-east-1:"),
        "{}",
        moto.key_arn()
    );
    let second = moto.create_key();
    assert_ne!(second, moto.key_arn());

    let kms = moto.client();
    let blob = kms
        .encrypt()
        .key_id(moto.key_arn())
        .plaintext(aws_sdk_kms::primitives::Blob::new("s3cret"))
        .send()
        .await
        .expect("Encrypt")
        .ciphertext_blob
        .expect("a ciphertext");
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .expect("Decrypt")
        .plaintext
        .expect("a plaintext");
    assert_eq!(plain.as_ref(), b"s3cret");
    let settings = moto.aws_settings();
    assert_eq!(
        settings.endpoint,
        format!("http://127.0.0.1:{}", moto.port())
    );
    assert_eq!(settings.kms_key_arn, moto.key_arn());
}

/// Set in the child process of the test below: start fixtures, report, then die hard.
const CHILD_ENV: &str = "PERSEUS_HARNESS_ABORT_CHILD";

/// This test's name as the harness knows it: its module path without the crate's name.
fn own_test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::fixtures_of_a_process_that_dies_are_cleaned_up")
}

#[test]
fn fixtures_of_a_process_that_dies_are_cleaned_up() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // Child role: shared fixtures live in statics and are never dropped, and abort
        // skips every destructor: only the watchdogs can clean up after this.
        let pg = shared_pg();
        let moto = shared_moto();
        println!(
            "FIXTURES {} {} {}",
            pg.port(),
            pg.dir().display(),
            moto.port()
        );
        std::process::abort();
    }

    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", &own_test_name(), "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child test process");
    assert!(!out.status.success(), "the child should have aborted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FIXTURES "))
        .unwrap_or_else(|| {
            panic!(
                "child did not report its fixtures:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let parts: Vec<&str> = line.split(' ').collect();
    let (pg_port, pg_dir, moto_port): (u16, PathBuf, u16) = (
        parts[0].parse().unwrap(),
        parts[1].into(),
        parts[2].parse().unwrap(),
    );

    let cleaned = poll(Duration::from_secs(30), Duration::from_millis(50), || {
        (!port_accepts(pg_port) && !pg_dir.exists() && !port_accepts(moto_port)).then_some(())
    });
    assert!(
        cleaned.is_some(),
        "after the child died: pg listening={} dir exists={} moto listening={}",
        port_accepts(pg_port),
        pg_dir.exists(),
        port_accepts(moto_port)
    );
}

#[test]
fn a_daemon_that_exits_before_listening_is_reported_with_its_output() {
    let config = serde_json::json!({ "ListenAddress": "", "NoSuchSetting": 1 });
    let err = match support::Perseus::try_start_json(config) {
        Ok(daemon) => panic!(
            "perseus started with an unknown key; output:\n{}",
            daemon.log()
        ),
        Err(e) => e,
    };
    assert!(err.contains("exited"), "{err}");
    assert!(
        err.contains("NoSuchSetting"),
        "the daemon's own message is missing: {err}"
    );
}

#[tokio::test]
async fn tenant_rows_are_made_as_operators_make_them() {
    let (pg, moto) = support::shared_pg_and_moto();
    let auth_db = unique_name("auth");
    pg.create_database(&auth_db);
    let auth = pg.connect(&auth_db).await;
    support::tenant::apply_migrations(&auth).await;

    let dest_db = unique_name("dest");
    pg.create_database(&dest_db);
    let dest = pg.connect(&dest_db).await;
    let schema = "Tenant \"One\"";
    support::tenant::create_schema(&dest, schema).await;
    let found: i64 = dest
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        found, 1,
        "schema with quotes and capitals kept its exact name"
    );

    let spec = support::TenantSpec {
        source_db: "app".into(),
        source_schema: schema.into(),
        source_user: "tenant_one".into(),
        password: "client secret".into(),
        dest_host: pg.host_port(),
        dest_db: dest_db.clone(),
        dest_user: SUPERUSER.into(),
        dest_password: support::pg::SUPERUSER_PASSWORD.into(),
    };
    let id = support::tenant::add_tenant(&auth, &moto.aws_settings(), &spec).await;
    let row = auth
        .query_one(
            "SELECT source_schema, source_pass_hashed, dest_pass_enc FROM perseus_auth WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), schema);
    let hashed: String = row.get(1);
    perseus::auth::hash::verify_password(&hashed, b"client secret").expect("hash verifies");
    assert!(perseus::auth::hash::verify_password(&hashed, b"other").is_err());

    // The ciphertext is a real KMS blob: moto decrypts it back to the password.
    use base64::Engine as _;
    let enc: String = row.get(2);
    let blob = base64::engine::general_purpose::STANDARD
        .decode(enc)
        .expect("dest_pass_enc is standard base64");
    let plain = moto
        .client()
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
        .send()
        .await
        .expect("Decrypt")
        .plaintext
        .expect("a plaintext");
    assert_eq!(plain.as_ref(), support::pg::SUPERUSER_PASSWORD.as_bytes());
}
