//! The admin console against real PostgreSQL: psql and tokio-postgres read SHOW result sets,
//! PAUSE holds a tenant's next transaction while others run and RESUME releases it, KILL
//! disconnects a tenant's clients, RELOAD applies a good file and refuses a bad one, and
//! unknown commands and bad logins are refused properly.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use perseus::auth::hash::hash_password;
use support::datapath::{self, Env, db_error, libpq_cmd};
use support::poll_async;
use support::wire::{Wire, tags};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";
/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(15);
/// How long a held query must stay unanswered to count as held.
const HOLD: Duration = Duration::from_secs(1);

/// Tenants as in [`Env::start`], with an admin user configured.
async fn start(schemas: &[&str]) -> Env {
    Env::start_with(schemas, |config| {
        config.pool = datapath::pool(4);
        config
            .admin
            .users
            .insert(ADMIN.into(), hash_password(ADMIN_PASSWORD.as_bytes()));
    })
    .await
}

async fn admin_as(env: &Env, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(env.perseus.port())
        .user(user)
        .password(password)
        .dbname("perseus")
        .connect_timeout(Duration::from_secs(20));
    let (client, conn) = c.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn admin(env: &Env) -> Client {
    admin_as(env, ADMIN, ADMIN_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("admin login: {e:?}\n{}", env.perseus.log()))
}

/// The rows of a console command, each as column name to value.
async fn rows(adm: &Client, sql: &str) -> Vec<HashMap<String, Option<String>>> {
    let msgs = adm
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn val<'a>(row: &'a HashMap<String, Option<String>>, col: &str) -> &'a str {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .as_deref()
        .unwrap_or("NULL")
}

/// `db/schema` as the console takes it, the schema double-quoted.
fn tenant_arg(env: &Env, i: usize) -> String {
    let t = env.tenant(i);
    format!(
        "{}/\"{}\"",
        t.source_db,
        t.source_schema.replace('"', "\"\"")
    )
}

/// Polls SHOW CLIENTS until `want` holds for the list of (schema, state) pairs.
async fn wait_clients(adm: &Client, want: impl Fn(&[(String, String)]) -> bool) {
    let got = poll_async(DEADLINE, Duration::from_millis(20), || async {
        let list: Vec<(String, String)> = rows(adm, "SHOW CLIENTS")
            .await
            .iter()
            .map(|r| (val(r, "schema").to_owned(), val(r, "state").to_owned()))
            .collect();
        want(&list).then_some(())
    })
    .await;
    if got.is_none() {
        panic!(
            "SHOW CLIENTS never matched; last: {:?}",
            rows(adm, "SHOW CLIENTS").await
        );
    }
}

#[tokio::test]
async fn psql_and_tokio_postgres_read_show_tables() {
    let env = start(&["adm_show"]).await;
    let tenant = env.connect(env.tenant(0)).await;
    tenant.simple_query("SELECT v FROM t").await.unwrap();

    let out = libpq_cmd(
        "psql",
        env.perseus.port(),
        ADMIN,
        ADMIN_PASSWORD,
        "perseus",
        "",
    )
    .args(["-h", "127.0.0.1", "-p", &env.perseus.port().to_string()])
    .args(["-U", ADMIN, "perseus", "-c", "SHOW POOLS"])
    .output()
    .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = stdout.lines().next().unwrap_or_default();
    for col in [
        "dest_host",
        "dest_db",
        "dest_user",
        "max_open",
        "in_use",
        "search_path_sets",
    ] {
        assert!(header.contains(col), "psql header lacks {col}:\n{stdout}");
    }
    assert!(stdout.contains(&env.dest_db), "{stdout}");
    assert!(stdout.contains("(1 row)"), "{stdout}");

    let adm = admin(&env).await;
    let pools = rows(&adm, "show pools;").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    let p = &pools[0];
    assert_eq!(val(p, "dest_db"), env.dest_db);
    assert_eq!(val(p, "dest_user"), env.role);
    assert_eq!(val(p, "dest_host"), env.pg.host_port());
    assert_eq!(val(p, "max_open"), "4");
    assert!(val(p, "open").parse::<u32>().unwrap() >= 1, "{p:?}");
    assert!(
        val(p, "search_path_sets").parse::<u32>().unwrap() >= 1,
        "{p:?}"
    );

    let clients = rows(&adm, "SHOW CLIENTS").await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    let c = &clients[0];
    assert_eq!(val(c, "schema"), env.tenant(0).source_schema);
    assert_eq!(val(c, "user"), env.tenant(0).source_user);
    assert_eq!(val(c, "state"), "idle");
    assert!(val(c, "connect_time").ends_with(" UTC"), "{c:?}");

    let tenants = rows(&adm, "SHOW TENANTS").await;
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(val(&tenants[0], "clients"), "1");
    assert_eq!(val(&tenants[0], "paused"), "false");

    let stats = rows(&adm, "SHOW STATS").await;
    assert!(val(&stats[0], "checkouts").parse::<u64>().unwrap() >= 1);
    let servers = rows(&adm, "SHOW SERVERS").await;
    assert_eq!(val(&servers[0], "dest_db"), env.dest_db);
    let version = rows(&adm, "SHOW VERSION").await;
    assert!(val(&version[0], "version").starts_with("Perseus "));

    let config = rows(&adm, "SHOW CONFIG").await;
    let get = |k: &str| {
        config
            .iter()
            .find(|r| val(r, "key") == k)
            .map(|r| val(r, "value").to_owned())
    };
    assert_eq!(get("PoolSettings.MaxOpen").as_deref(), Some("4"));
    assert_eq!(
        get("AdminSettings.Users.admin").as_deref(),
        Some("<redacted>")
    );
    assert_eq!(
        get("AWSSettings.SecretAccessKey").as_deref(),
        Some("<redacted>")
    );
    let hash = &env.config.admin.users[ADMIN];
    for r in &config {
        assert!(
            !val(r, "value").contains(hash.as_str()),
            "admin hash shown: {r:?}"
        );
    }
}

#[tokio::test]
async fn pause_holds_a_tenant_and_resume_releases_it() {
    let env = start(&["adm_pause_a", "adm_pause_b"]).await;
    let a = env.connect(env.tenant(0)).await;
    let b = env.connect(env.tenant(1)).await;
    let adm = admin(&env).await;
    let ta = tenant_arg(&env, 0);

    // A transaction in flight when PAUSE comes finishes.
    a.batch_execute("BEGIN; INSERT INTO t VALUES (100)")
        .await
        .unwrap();
    adm.simple_query(&format!("PAUSE {ta}")).await.unwrap();
    tokio::time::timeout(
        DEADLINE,
        a.batch_execute("INSERT INTO t VALUES (101); COMMIT"),
    )
    .await
    .expect("a transaction in flight must finish under PAUSE")
    .unwrap();

    // The next one waits at the gate while the other tenant goes on.
    let mut held = tokio::spawn(async move {
        let r = a.simple_query("SELECT count(*) FROM t").await;
        (a, r)
    });
    let schema_a = env.tenant(0).source_schema.clone();
    wait_clients(&adm, |l| {
        l.iter().any(|(s, st)| *s == schema_a && st == "waiting")
    })
    .await;
    for _ in 0..3 {
        let r = tokio::time::timeout(DEADLINE, b.simple_query("SELECT v FROM t"))
            .await
            .expect("another tenant's query must not be held")
            .unwrap();
        assert_eq!(datapath::simple_rows(&r), vec![vec![Some("1".into())]]);
    }
    assert!(
        tokio::time::timeout(HOLD, &mut held).await.is_err(),
        "the paused tenant's query completed"
    );
    let tenants = rows(&adm, "SHOW TENANTS").await;
    let paused: HashMap<&str, &str> = tenants
        .iter()
        .map(|r| (val(r, "schema"), val(r, "paused")))
        .collect();
    assert_eq!(paused[env.tenant(0).source_schema.as_str()], "true");
    assert_eq!(paused[env.tenant(1).source_schema.as_str()], "false");

    let done = adm.simple_query(&format!("resume {ta};")).await.unwrap();
    assert!(matches!(
        done.last(),
        Some(SimpleQueryMessage::CommandComplete(_))
    ));
    let (a, r) = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("RESUME must release the held query")
        .unwrap();
    assert_eq!(
        datapath::simple_rows(&r.unwrap()),
        vec![vec![Some("3".into())]]
    );

    // PAUSE without a tenant holds everyone; RESUME without one releases everyone.
    adm.simple_query("PAUSE").await.unwrap();
    let mut held_b = tokio::spawn(async move { b.simple_query("SELECT 1").await.map(|_| b) });
    assert!(
        tokio::time::timeout(HOLD, &mut held_b).await.is_err(),
        "PAUSE of all tenants let a query through"
    );
    adm.simple_query("RESUME").await.unwrap();
    tokio::time::timeout(DEADLINE, held_b)
        .await
        .expect("RESUME must release every tenant")
        .unwrap()
        .unwrap();
    a.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn kill_disconnects_only_that_tenant() {
    let env = start(&["adm_kill_a", "adm_kill_b"]).await;
    let (idle_a, conn) = env
        .client_config(env.tenant(0))
        .connect(NoTls)
        .await
        .unwrap();
    let idle_conn = tokio::spawn(conn);
    idle_a.simple_query("SELECT 1").await.unwrap();
    let (busy_a, conn) = env
        .client_config(env.tenant(0))
        .connect(NoTls)
        .await
        .unwrap();
    let busy_conn = tokio::spawn(conn);
    busy_a
        .batch_execute("BEGIN; INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let b = env.connect(env.tenant(1)).await;
    let adm = admin(&env).await;

    let done = adm
        .simple_query(&format!("KILL {}", tenant_arg(&env, 0)))
        .await
        .unwrap();
    assert!(matches!(
        done.last(),
        Some(SimpleQueryMessage::CommandComplete(_))
    ));
    for (name, task) in [("idle", idle_conn), ("in a transaction", busy_conn)] {
        let end = tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap_or_else(|_| panic!("the {name} client was not disconnected"))
            .unwrap();
        let e = end.expect_err("the connection must end with an error");
        let (code, message) = db_error(&e);
        assert_eq!(code, "57P01", "{message}");
        assert!(message.contains("KILL"), "{message}");
    }
    assert!(idle_a.simple_query("SELECT 1").await.is_err());
    assert!(busy_a.is_closed());

    // The killed transaction was rolled back, not left open on a server connection.
    let observer = env.dest_super().await;
    env.wait_no_open_transactions(&observer).await;
    let dest = env.dest().await;
    let n: i64 = dest
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.t WHERE v = 7",
                support::quote_ident(&env.tenant(0).source_schema)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    let r = b.simple_query("SELECT v FROM t").await.unwrap();
    assert_eq!(datapath::simple_rows(&r), vec![vec![Some("1".into())]]);
    let schema_a = env.tenant(0).source_schema.clone();
    wait_clients(&adm, |l| l.iter().all(|(s, _)| *s != schema_a)).await;
    // KILL is not a ban: the tenant may come back.
    let again = env.connect(env.tenant(0)).await;
    again.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn unknown_commands_and_extended_protocol_are_refused() {
    let env = start(&["adm_err"]).await;
    let adm = admin(&env).await;

    let e = adm.simple_query("SELECT 1").await.unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "42601");
    for cmd in [
        "SHOW POOLS",
        "SHOW CLIENTS",
        "RELOAD",
        "PAUSE",
        "RESUME",
        "KILL",
    ] {
        assert!(message.contains(cmd), "{cmd} not listed in: {message}");
    }
    let e = adm.simple_query("SHOW NONSENSE").await.unwrap_err();
    assert_eq!(db_error(&e).0, "0A000");
    let e = adm.simple_query("KILL").await.unwrap_err();
    assert_eq!(db_error(&e).0, "0A000");

    // Extended protocol is refused and the session stays usable.
    let e = adm.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).0, "0A000");
    let v = rows(&adm, "SHOW VERSION").await;
    assert_eq!(v.len(), 1);

    // A raw look at the wire: the welcome, two statements in one Query, an empty query.
    let mut w = Wire::connect(env.perseus.port()).await;
    w.login(&[("user", ADMIN), ("database", "perseus")], ADMIN_PASSWORD)
        .await
        .unwrap_or_else(|m| panic!("admin login refused: {}", m.message()));
    assert_eq!(tags(&w.query("SHOW VERSION; SHOW TENANTS").await), "TDCTCZ");
    assert_eq!(tags(&w.query(" ; ").await), "IZ");
    let msgs = w.query("show version; bogus; show version").await;
    assert_eq!(tags(&msgs), "TDCEZ");
}

#[tokio::test]
async fn wrong_admin_credentials_are_refused() {
    let env = start(&["adm_auth"]).await;
    for (user, password) in [
        (ADMIN, "wrong"),
        ("nobody", ADMIN_PASSWORD),
        (
            env.tenant(0).source_user.as_str(),
            env.tenant(0).password.as_str(),
        ),
    ] {
        let e = admin_as(&env, user, password).await.unwrap_err();
        assert_eq!(db_error(&e).0, "28P01", "{user}");
    }
    let out = libpq_cmd("psql", env.perseus.port(), ADMIN, "wrong", "perseus", "")
        .args(["-c", "SHOW POOLS"])
        .output()
        .expect("run psql");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!env.perseus.log().contains(ADMIN_PASSWORD));
}

#[tokio::test]
async fn reload_applies_a_good_file_and_refuses_a_bad_one() {
    let mut env = start(&["adm_reload"]).await;
    let tenant = env.connect(env.tenant(0)).await;
    tenant.simple_query("SELECT 1").await.unwrap();
    let adm = admin(&env).await;

    let mut config = env.config.clone();
    config.pool = datapath::pool(2);
    config
        .admin
        .users
        .insert("ops".into(), hash_password(b"ops-secret"));
    env.perseus.rewrite_config(&config);
    adm.simple_query("RELOAD").await.unwrap();
    let applied = poll_async(DEADLINE, Duration::from_millis(20), || async {
        let p = rows(&adm, "SHOW POOLS").await;
        (val(&p[0], "max_open") == "2").then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "RELOAD did not apply MaxOpen\n{}",
        env.perseus.log()
    );
    let ops = poll_async(DEADLINE, Duration::from_millis(50), || async {
        admin_as(&env, "ops", "ops-secret").await.ok()
    })
    .await
    .expect("an admin user added by RELOAD can log in");
    assert_eq!(rows(&ops, "SHOW VERSION").await.len(), 1);

    std::fs::write(
        env.perseus.config_path(),
        "{ \"PoolSettings\": {\"MaxOpne\": 1} }",
    )
    .unwrap();
    let e = adm.simple_query("RELOAD").await.unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "F0000");
    assert!(message.contains("MaxOpne"), "{message}");
    let config = rows(&adm, "SHOW CONFIG").await;
    let max_open = config
        .iter()
        .find(|r| val(r, "key") == "PoolSettings.MaxOpen")
        .map(|r| val(r, "value").to_owned());
    assert_eq!(max_open.as_deref(), Some("2"));
    tenant.simple_query("SELECT 1").await.unwrap();
}
