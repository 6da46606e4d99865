//! Server TLS (ServerTLSSettings): Perseus to PostgreSQL over TLS against a cluster with a
//! certificate from a test CA and pg_hba.conf refusing plaintext to the destination role —
//! verify-full with the right CA serves, a wrong CA or host name fails with 08001 and a log
//! line, per-destination overrides and SIGHUP apply, prefer falls back to plaintext.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use perseus::config::{Config, PoolOverride, ServerTlsSettings, SslMode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::datapath::{db_error, options_for, pool, tenant_index};
use support::env::TenantEnv;
use support::proc::{account_ids, is_root};
use support::tenant::add_tenant;
use support::{Perseus, PgCluster, TenantSpec, poll_async, quote_ident, unique_name};
use tokio_postgres::{Client, NoTls};

/// Members of this group may reach the TLS cluster over TCP only with TLS.
const TLS_ONLY_GROUP: &str = "perseus_tls_only";
const ROLE_PASSWORD: &str = "tls-dest-secret";

/// A test CA (PEM in a file) and a server certificate it signed.
struct Pki {
    /// Holds `ca_file`; removed when the test ends.
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn pki(names: &[&str], ca_name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "perseus test server");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let dir = tempfile::tempdir().expect("temp dir for the CA");
    let ca_file = dir.path().join("root.crt");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA file");
    Pki {
        _dir: dir,
        ca_file,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A file the server user can read and nobody else: PostgreSQL refuses a key readable by others.
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    if is_root() {
        let (uid, gid) = account_ids("postgres").expect("the postgres account");
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

/// A cluster of its own with `ssl = on`, the certificate of `pki`, and pg_hba.conf rejecting
/// plaintext TCP logins of [`TLS_ONLY_GROUP`] members.
fn tls_cluster(pki: &Pki) -> PgCluster {
    let pg = PgCluster::start();
    let data = pg.dir().join("data");
    write_private(&data.join("server.crt"), &pki.cert_pem);
    write_private(&data.join("server.key"), &pki.key_pem);
    pg.sql("postgres", "ALTER SYSTEM SET ssl = on");
    pg.sql("postgres", &format!("CREATE ROLE {TLS_ONLY_GROUP} NOLOGIN"));
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    // Truncating in place keeps the file's owner and mode.
    std::fs::write(
        &hba,
        format!("hostnossl all +{TLS_ONLY_GROUP} all reject\n{old}"),
    )
    .expect("write pg_hba.conf");
    pg.stop();
    pg.restart();
    assert_eq!(pg.sql("postgres", "SHOW ssl"), "on", "ssl did not come on");
    pg
}

/// A destination database on `pg` owned by a TLS-only role, with one schema per entry of
/// `schemas` holding `t(v) = index`; returns (db, role).
fn destination(pg: &PgCluster, schemas: &[&str]) -> (String, String) {
    let db = unique_name("tlsdest");
    let role = unique_name("tlsapp");
    pg.create_role(&role, ROLE_PASSWORD);
    pg.sql(
        "postgres",
        &format!("GRANT {TLS_ONLY_GROUP} TO {}", quote_ident(&role)),
    );
    pg.create_database_owned_by(&db, &role);
    for (i, schema) in schemas.iter().enumerate() {
        pg.sql(
            &db,
            &format!(
                "CREATE SCHEMA {s} AUTHORIZATION {r}; CREATE TABLE {s}.t (v int); \
                 INSERT INTO {s}.t VALUES ({i}); ALTER TABLE {s}.t OWNER TO {r};",
                s = quote_ident(schema),
                r = quote_ident(&role)
            ),
        );
    }
    (db, role)
}

/// The auth world (auth DB on the shared cluster, KMS) and a tenant row for each
/// (schema, dest_host, dest_db, dest_user).
async fn tenants(rows: &[(&str, String, &str, &str)]) -> (TenantEnv, Vec<TenantSpec>) {
    let world = TenantEnv::new(&[]).await;
    let auth = world.pg.connect(&world.auth_db).await;
    let mut specs = Vec::new();
    for (i, (schema, dest_host, dest_db, dest_user)) in rows.iter().enumerate() {
        let spec = TenantSpec {
            source_db: "mm".into(),
            source_schema: schema.to_string(),
            source_user: format!("tls_user_{i}"),
            password: format!("tls-pw-{i}"),
            dest_host: dest_host.clone(),
            dest_db: dest_db.to_string(),
            dest_user: dest_user.to_string(),
            dest_password: ROLE_PASSWORD.into(),
        };
        add_tenant(&auth, &world.moto.aws_settings(), &spec).await;
        specs.push(spec);
    }
    (world, specs)
}

async fn connect(perseus: &Perseus, t: &TenantSpec) -> Result<Client, tokio_postgres::Error> {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(perseus.port())
        .user(&t.source_user)
        .password(&t.password)
        .dbname(&t.source_db)
        .options(options_for(&t.source_schema))
        .connect_timeout(Duration::from_secs(20));
    let (client, conn) = c.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn must_connect(perseus: &Perseus, t: &TenantSpec) -> Client {
    connect(perseus, t).await.unwrap_or_else(|e| {
        panic!(
            "connect through perseus as {}: {e} ({:?})\n{}",
            t.source_schema,
            e.as_db_error(),
            perseus.log()
        )
    })
}

/// Whether the server backend serving `client` uses TLS, as PostgreSQL itself reports it.
async fn backend_ssl(client: &Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("read pg_stat_ssl through perseus")
        .get(0)
}

fn server_tls(mode: SslMode, root: &Path) -> ServerTlsSettings {
    ServerTlsSettings {
        ssl_mode: mode,
        root_cert_file: root.display().to_string(),
    }
}

#[tokio::test]
async fn verify_full_with_the_test_ca_encrypts_and_serves() {
    let pki = pki(&["127.0.0.1"], "perseus test CA");
    let pg = tls_cluster(&pki);
    let (db, role) = destination(&pg, &["tls_a", "tls_b"]);
    let (world, specs) = tenants(&[
        ("tls_a", pg.host_port(), &db, &role),
        ("tls_b", pg.host_port(), &db, &role),
    ])
    .await;
    let mut config = world.config();
    config.pool = pool(2);
    config.server_tls = server_tls(SslMode::VerifyFull, &pki.ca_file);
    let perseus = Perseus::start(&config);

    // The destination refuses plaintext to this role, so any login at all proves TLS; the
    // server's own view says so too.
    let a = must_connect(&perseus, &specs[0]).await;
    assert!(
        backend_ssl(&a).await,
        "pg_stat_ssl says the server leg is plaintext"
    );
    let v = tenant_index(&a).await;
    assert_eq!(v, 0);
    // Extended protocol and a payload far larger than one TLS record, both ways.
    let big = "x".repeat(3 << 20);
    let echoed: String = a
        .query_one("SELECT $1::text || v FROM t", &[&big])
        .await
        .expect("large round trip over TLS")
        .get(0);
    assert_eq!(echoed.len(), big.len() + 1);
    assert!(echoed.ends_with('0'));

    // Many transactions from several clients over two TLS server connections: the idle
    // probe must keep healthy TLS connections in the pool (same backends reused).
    let mut tasks = Vec::new();
    for i in 0..6 {
        let t = specs[i % 2].clone();
        let c = must_connect(&perseus, &t).await;
        tasks.push(tokio::spawn(async move {
            let mut pids = std::collections::BTreeSet::new();
            for _ in 0..25 {
                let row = c
                    .query_one("SELECT v, pg_backend_pid() FROM t", &[])
                    .await
                    .expect("transaction over TLS");
                assert_eq!(row.get::<_, i32>(0), (i % 2) as i32);
                pids.insert(row.get::<_, i32>(1));
            }
            pids
        }));
    }
    let mut pids = std::collections::BTreeSet::new();
    for t in tasks {
        pids.extend(t.await.expect("client task"));
    }
    assert!(
        pids.len() <= 2,
        "MaxOpen 2 but {} server backends served: {pids:?}",
        pids.len()
    );
    let b = must_connect(&perseus, &specs[1]).await;
    assert!(backend_ssl(&b).await);
    assert!(
        !perseus.log().contains("server TLS failed"),
        "{}",
        perseus.log()
    );
}

#[tokio::test]
async fn verify_full_with_a_wrong_ca_fails_with_08001_and_a_log_line() {
    let pki_server = pki(&["127.0.0.1"], "perseus test CA");
    let other = pki(&["127.0.0.1"], "some other CA");
    let pg = tls_cluster(&pki_server);
    let (db, role) = destination(&pg, &["tls_w"]);
    let (world, specs) = tenants(&[("tls_w", pg.host_port(), &db, &role)]).await;
    let mut config = world.config();
    config.server_tls = server_tls(SslMode::VerifyFull, &other.ca_file);
    let perseus = Perseus::start(&config);

    let err = match connect(&perseus, &specs[0]).await {
        Ok(_) => panic!("login through an unverifiable server certificate succeeded"),
        Err(e) => e,
    };
    let (code, message) = db_error(&err);
    assert_eq!(code, "08001", "{message}");
    assert!(
        message.contains("TLS handshake") && message.contains("verify-full"),
        "the client is not told it was TLS: {message}"
    );
    let log = perseus.log();
    assert!(
        log.contains("server TLS failed") && log.contains("invalid peer certificate"),
        "no log line names the TLS failure:\n{log}"
    );
    // The password never leaks into either.
    assert!(!message.contains(ROLE_PASSWORD) && !log.contains(ROLE_PASSWORD));
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_a_sighup_override_to_verify_ca_fixes_it() {
    // The certificate names a host Perseus does not dial (it dials 127.0.0.1).
    let pki = pki(&["db.perseus.test"], "perseus test CA");
    let pg = tls_cluster(&pki);
    let (db, role) = destination(&pg, &["tls_n"]);
    let (world, specs) = tenants(&[("tls_n", pg.host_port(), &db, &role)]).await;
    let mut config = world.config();
    config.server_tls = server_tls(SslMode::VerifyFull, &pki.ca_file);
    let mut perseus = Perseus::start(&config);

    let err = match connect(&perseus, &specs[0]).await {
        Ok(_) => panic!("verify-full accepted a certificate for another name"),
        Err(e) => e,
    };
    let (code, message) = db_error(&err);
    assert_eq!(code, "08001");
    assert!(message.contains("not valid for name"), "{message}");

    // Per-destination override, applied by SIGHUP: verify-ca checks the chain only.
    config.overrides.insert(
        format!("{}/{}", pg.host_port(), db),
        PoolOverride {
            ssl_mode: Some(SslMode::VerifyCa),
            ..Default::default()
        },
    );
    perseus.rewrite_config(&config);
    perseus.send_signal(libc::SIGHUP);
    let client = poll_async(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { connect(&perseus, &specs[0]).await.ok() },
    )
    .await
    .unwrap_or_else(|| panic!("verify-ca override never took effect:\n{}", perseus.log()));
    assert!(backend_ssl(&client).await);
    assert!(
        perseus.log().contains("server TLS settings applied"),
        "{}",
        perseus.log()
    );
}

#[tokio::test]
async fn prefer_uses_tls_when_offered_and_falls_back_to_plaintext_otherwise() {
    let pki = pki(&["127.0.0.1"], "perseus test CA");
    let pg = tls_cluster(&pki);
    let (db, role) = destination(&pg, &["tls_p"]);
    // A destination without TLS: the shared cluster, whose role may log in in plaintext.
    let plain_db = unique_name("plaindest");
    let plain_role = unique_name("plainapp");
    let shared = support::shared_pg();
    shared.create_role(&plain_role, ROLE_PASSWORD);
    shared.create_database_owned_by(&plain_db, &plain_role);
    shared.sql(
        &plain_db,
        &format!(
            "CREATE SCHEMA plain_p AUTHORIZATION {r}; CREATE TABLE plain_p.t (v int); \
             INSERT INTO plain_p.t VALUES (7); ALTER TABLE plain_p.t OWNER TO {r};",
            r = quote_ident(&plain_role)
        ),
    );
    let (world, specs) = tenants(&[
        ("tls_p", pg.host_port(), &db, &role),
        ("plain_p", shared.host_port(), &plain_db, &plain_role),
    ])
    .await;
    // No ServerTLSSettings in the file at all: the default is prefer.
    let config = world.config();
    assert_eq!(config.server_tls.ssl_mode, SslMode::Prefer);
    let mut json = serde_json::to_value(&config).unwrap();
    json.as_object_mut().unwrap().remove("ServerTLSSettings");
    let perseus = Perseus::try_start_json(json).unwrap_or_else(|e| panic!("{e}"));

    let tls = must_connect(&perseus, &specs[0]).await;
    assert!(
        backend_ssl(&tls).await,
        "prefer did not use the TLS the server offers"
    );
    let plain = must_connect(&perseus, &specs[1]).await;
    assert!(!backend_ssl(&plain).await);
    let v = tenant_index(&plain).await;
    assert_eq!(v, 7);
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_disable_never_asks() {
    let pki = pki(&["127.0.0.1"], "perseus test CA");
    let pg = tls_cluster(&pki);
    // A role that may log in either way, on the TLS cluster (not in the TLS-only group).
    let db = unique_name("anydest");
    let role = unique_name("anyapp");
    pg.create_role(&role, ROLE_PASSWORD);
    pg.create_database_owned_by(&db, &role);
    pg.sql(
        &db,
        &format!(
            "CREATE SCHEMA any_d AUTHORIZATION {r}; CREATE TABLE any_d.t (v int); \
             INSERT INTO any_d.t VALUES (3); ALTER TABLE any_d.t OWNER TO {r};",
            r = quote_ident(&role)
        ),
    );
    let shared = support::shared_pg();
    let plain_db = unique_name("plaindest");
    let plain_role = unique_name("plainapp");
    shared.create_role(&plain_role, ROLE_PASSWORD);
    shared.create_database_owned_by(&plain_db, &plain_role);
    shared.sql(
        &plain_db,
        &format!(
            "CREATE SCHEMA plain_r AUTHORIZATION {r}; CREATE TABLE plain_r.t (v int); \
             ALTER TABLE plain_r.t OWNER TO {r};",
            r = quote_ident(&plain_role)
        ),
    );
    let (world, specs) = tenants(&[
        ("any_d", pg.host_port(), &db, &role),
        ("plain_r", shared.host_port(), &plain_db, &plain_role),
    ])
    .await;
    let mut config: Config = world.config();
    config.server_tls.ssl_mode = SslMode::Require;
    config.overrides.insert(
        format!("{}/{}", pg.host_port(), db),
        PoolOverride {
            ssl_mode: Some(SslMode::Disable),
            ..Default::default()
        },
    );
    let perseus = Perseus::start(&config);

    let err = match connect(&perseus, &specs[1]).await {
        Ok(_) => panic!("require accepted a server without TLS"),
        Err(e) => e,
    };
    let (code, message) = db_error(&err);
    assert_eq!(code, "08001");
    assert!(message.contains("does not support TLS"), "{message}");

    let plain = must_connect(&perseus, &specs[0]).await;
    assert!(
        !backend_ssl(&plain).await,
        "SSLMode disable (override) still negotiated TLS"
    );
}

#[tokio::test]
async fn unusable_server_tls_settings_stop_the_start_and_are_refused_on_sighup() {
    let world = TenantEnv::new(&["tls_cfg"]).await;
    let mut config = world.config();

    // verify-full without a root file: a config error naming the key.
    config.server_tls = ServerTlsSettings {
        ssl_mode: SslMode::VerifyFull,
        root_cert_file: String::new(),
    };
    let err = match Perseus::try_start(&config) {
        Ok(_) => panic!("perseus started with verify-full and no RootCertFile"),
        Err(e) => e,
    };
    assert!(
        err.contains("ServerTLSSettings") && err.contains("needs RootCertFile"),
        "{err}"
    );

    // A root file that does not exist: refused at start, naming the file.
    config.server_tls.root_cert_file = "/nonexistent/rds-global-bundle.pem".into();
    let err = match Perseus::try_start(&config) {
        Ok(_) => panic!("perseus started without its RootCertFile"),
        Err(e) => e,
    };
    assert!(err.contains("/nonexistent/rds-global-bundle.pem"), "{err}");

    // Running with prefer; a SIGHUP naming a missing root file is refused and serving goes on.
    config.server_tls = ServerTlsSettings::default();
    let mut perseus = Perseus::start(&config);
    let t = &world.tenants[0];
    let c = must_connect(&perseus, t).await;
    config.server_tls = ServerTlsSettings {
        ssl_mode: SslMode::VerifyCa,
        root_cert_file: "/nonexistent/other-bundle.pem".into(),
    };
    perseus.rewrite_config(&config);
    perseus.send_signal(libc::SIGHUP);
    let refused = support::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        perseus
            .log()
            .contains("server TLS settings unusable")
            .then_some(())
    });
    assert!(refused.is_some(), "reload not refused:\n{}", perseus.log());
    assert!(perseus.log().contains("/nonexistent/other-bundle.pem"));
    let v = tenant_index(&c).await;
    assert_eq!(v, 0);
    let fresh = must_connect(&perseus, t).await;
    assert!(
        !backend_ssl(&fresh).await,
        "the refused verify-ca was applied anyway"
    );
}

/// An auth database that only takes TLS (RDS with rds.force_ssl=1): `--migrate` and the
/// daemon both reach it with sslmode=verify-full and sslrootcert from AuthDBDSN.
#[tokio::test]
async fn auth_db_over_verified_tls() {
    let pki = pki(&["127.0.0.1"], "perseus auth CA");
    let pg = tls_cluster(&pki);
    let (db, role) = destination(&pg, &["tls_auth"]);
    let auth_db = unique_name("tlsauth");
    pg.create_database_owned_by(&auth_db, &role);
    let dsn = format!(
        "postgres://{role}:{ROLE_PASSWORD}@127.0.0.1:{}/{auth_db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        pki.ca_file.display()
    );
    let (world, _) = tenants(&[]).await;
    let mut config = world.config();
    config.auth_db.dsn = dsn;
    config.server_tls = server_tls(SslMode::VerifyFull, &pki.ca_file);
    let json = serde_json::to_value(&config).unwrap();
    let out = support::perseus::run(&json, &["--migrate"]);
    assert!(
        out.status.success(),
        "--migrate over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A tenant row written into the TLS-only auth DB (as its superuser, over the socket).
    let auth = pg.connect(&auth_db).await;
    let spec = TenantSpec {
        source_db: "mm".into(),
        source_schema: "tls_auth".into(),
        source_user: "tls_auth_user".into(),
        password: "tls-auth-pw".into(),
        dest_host: pg.host_port(),
        dest_db: db.clone(),
        dest_user: role.clone(),
        dest_password: ROLE_PASSWORD.into(),
    };
    add_tenant(&auth, &world.moto.aws_settings(), &spec).await;
    let perseus = Perseus::start(&config);
    let client = must_connect(&perseus, &spec).await;
    let v = tenant_index(&client).await;
    assert_eq!(v, 0);
    // The pooler's auth-DB session really is TLS, as the server sees it.
    let tls_sessions: i64 = auth
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.usename = $2 AND s.ssl",
            &[&auth_db, &role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        tls_sessions >= 1,
        "no TLS session from perseus to the auth DB"
    );
}
