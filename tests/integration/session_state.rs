//! Session state in transaction mode: a client's SETs follow it across server connections and
//! never reach another client; what cannot be replayed pins the client to its connection.

use crate::support;

use std::time::Duration;

use support::datapath::{Env, pool};
use support::wire::Wire;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

async fn show(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
        _ => None,
    })?
}

#[tokio::test]
async fn settings_follow_their_client_and_never_leak() {
    // One server connection shared by both tenants: any leak would show at once.
    let env = Env::start(&["st_a", "st_b"], pool(1)).await;
    let a = env.connect(env.tenant(0)).await;
    let b = env.connect(env.tenant(1)).await;
    a.simple_query("SET statement_timeout = 1234")
        .await
        .unwrap();
    a.simple_query("SELECT set_config('myapp.user_id', '42', false)")
        .await
        .unwrap();
    for round in 0..20 {
        assert_eq!(
            show(&a, "SHOW statement_timeout").await.as_deref(),
            Some("1234ms"),
            "round {round}"
        );
        assert_eq!(
            show(&a, "SELECT current_setting('myapp.user_id', true)")
                .await
                .as_deref(),
            Some("42")
        );
        assert_eq!(
            show(&b, "SHOW statement_timeout").await.as_deref(),
            Some("0"),
            "round {round}: leaked to B"
        );
        let other = show(
            &b,
            "SELECT coalesce(current_setting('myapp.user_id', true), '')",
        )
        .await;
        assert_eq!(
            other.as_deref(),
            Some(""),
            "round {round}: custom setting leaked to B"
        );
    }
    // A setting made inside a rolled-back transaction does not stick.
    a.batch_execute("BEGIN; SET work_mem = '8MB'; ROLLBACK")
        .await
        .unwrap();
    let wm = show(&a, "SHOW work_mem").await.unwrap();
    assert_ne!(wm, "8MB");
    // RESET ALL returns the client to its startup settings.
    a.simple_query("RESET ALL").await.unwrap();
    assert_eq!(
        show(&a, "SHOW statement_timeout").await.as_deref(),
        Some("0")
    );
    assert_eq!(
        show(&a, "SELECT current_schema()").await.as_deref(),
        Some("st_a")
    );
}

#[tokio::test]
async fn clients_sharing_startup_settings_still_keep_their_own_changes() {
    // Clients logging in with the same settings share one settings map, and a connection
    // fitted to it skips the comparison: a change one of them makes must still never reach
    // the others, on the one server connection they all share.
    let env = Env::start(&["st_shared"], pool(1)).await;
    let mut config = env.client_config(env.tenant(0));
    config.application_name("same_app");
    let a = env.connect_with(&config).await;
    let b = env.connect_with(&config).await;
    let c = env.connect_with(&config).await;
    let app = "SHOW application_name";
    assert_eq!(show(&b, app).await.as_deref(), Some("same_app"));
    a.simple_query("SET application_name = 'a_only'")
        .await
        .unwrap();
    a.simple_query("SET statement_timeout = 4321")
        .await
        .unwrap();
    for round in 0..10 {
        assert_eq!(
            show(&a, app).await.as_deref(),
            Some("a_only"),
            "round {round}"
        );
        assert_eq!(
            show(&b, app).await.as_deref(),
            Some("same_app"),
            "round {round}"
        );
        assert_eq!(
            show(&c, "SHOW statement_timeout").await.as_deref(),
            Some("0"),
            "round {round}: A's setting reached C"
        );
        assert_eq!(
            show(&a, "SHOW statement_timeout").await.as_deref(),
            Some("4321ms"),
            "round {round}"
        );
        assert_eq!(
            show(&c, app).await.as_deref(),
            Some("same_app"),
            "round {round}"
        );
    }
    // A change inside a transaction, seen only through ParameterStatus, is the client's too.
    b.batch_execute("BEGIN; SET application_name = 'b_txn'; COMMIT")
        .await
        .unwrap();
    assert_eq!(show(&c, app).await.as_deref(), Some("same_app"));
    assert_eq!(show(&b, app).await.as_deref(), Some("b_txn"));
    assert_eq!(show(&c, app).await.as_deref(), Some("same_app"));
}

#[tokio::test]
async fn reconnecting_clients_get_the_startup_settings_they_asked_for() {
    // Once the pool knows the server's parameters, a login asking only for reported ones
    // reuses the settings map built for an earlier client that asked for the same: clients
    // asking for different values must each still get their own.
    let env = Env::start(&["st_again"], pool(1)).await;
    let named = |app: &str| {
        let mut config = env.client_config(env.tenant(0));
        config.application_name(app);
        config
    };
    let app = "SHOW application_name";
    let plain = env.connect(env.tenant(0)).await;
    let plain_app = show(&plain, app).await;
    for round in 0..3 {
        let x = env.connect_with(&named("app_x")).await;
        let y = env.connect_with(&named("app_y")).await;
        let again = env.connect(env.tenant(0)).await;
        for _ in 0..3 {
            assert_eq!(
                show(&x, app).await.as_deref(),
                Some("app_x"),
                "round {round}"
            );
            assert_eq!(
                show(&y, app).await.as_deref(),
                Some("app_y"),
                "round {round}"
            );
            assert_eq!(show(&again, app).await, plain_app, "round {round}");
        }
    }
}

#[tokio::test]
async fn each_login_is_welcomed_with_its_own_reported_parameters() {
    // The ParameterStatus block is built once per shared settings map and reused: clients
    // asking for different values must still each be told their own, every time.
    let env = Env::start(&["st_welcome"], pool(1)).await;
    let t = env.tenant(0);
    let port = env.perseus.port();
    let login = |app: &'static str| {
        let t = t.clone();
        async move {
            let mut w = Wire::connect(port).await;
            let mut params = vec![
                ("user", t.source_user.as_str()),
                ("database", t.source_db.as_str()),
                ("schema_search_path", t.source_schema.as_str()),
            ];
            if !app.is_empty() {
                params.push(("application_name", app));
            }
            let (_, reported) = w
                .login_reported(&params, &t.password)
                .await
                .unwrap_or_else(|e| panic!("login refused: {}", e.message()));
            reported
        }
    };
    let plain = login("").await;
    let server_version = plain.get("server_version").cloned();
    assert!(server_version.is_some(), "{plain:?}");
    for round in 0..3 {
        for app in ["app_x", "app_y", ""] {
            let reported = login(app).await;
            let expected = match app {
                "" => plain.get("application_name").map(String::as_str),
                app => Some(app),
            };
            assert_eq!(
                reported.get("application_name").map(String::as_str),
                expected,
                "round {round}: {reported:?}"
            );
            assert_eq!(reported.get("server_version"), server_version.as_ref());
            assert_eq!(reported.len(), plain.len(), "round {round}: {reported:?}");
        }
    }
}

#[tokio::test]
async fn temp_tables_and_advisory_locks_pin_the_client() {
    let env = Env::start(&["st_c", "st_d"], pool(2)).await;
    let a = env.connect(env.tenant(0)).await;
    a.batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (7)")
        .await
        .unwrap();
    a.simple_query("SELECT pg_advisory_lock(99)").await.unwrap();
    // The pinned session is counted while it lasts.
    let body = metrics(env.perseus.metrics_port()).await;
    assert!(
        body.lines()
            .any(|l| l == "perseus_client_connections_pinned 1"),
        "pinned gauge missing: {body}"
    );
    let b = env.connect(env.tenant(1)).await;
    for _ in 0..10 {
        assert_eq!(
            show(&a, "SELECT x FROM scratch").await.as_deref(),
            Some("7")
        );
        assert_eq!(show(&b, "SELECT v FROM t").await.as_deref(), Some("1"));
        // Another session's temporary table is not reachable by name.
        let other_sees = show(&b, "SELECT to_regclass('scratch') IS NULL").await;
        assert_eq!(other_sees.as_deref(), Some("t"));
    }
    // The lock is held by A's session: B cannot take it.
    assert_eq!(
        show(&b, "SELECT pg_try_advisory_lock(99)").await.as_deref(),
        Some("f")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_reaches_a_pinned_client() {
    let env = Env::start(&["st_e"], pool(2)).await;
    let config = env.client_config(env.tenant(0));
    let (listener, mut conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notification(n)) = msg {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener.batch_execute("LISTEN perseus_chan").await.unwrap();
    let sender = env.connect(env.tenant(0)).await;
    sender
        .batch_execute("NOTIFY perseus_chan, 'hello'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(got.ok().flatten().as_deref(), Some("hello"));
}

async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn refuse_pinning_fails_pinning_sql_with_a_clear_error_and_keeps_the_session() {
    let env = Env::start_with(&["st_refuse"], |c| {
        c.pool = pool(1);
        c.client.refuse_pinning = true;
    })
    .await;
    let a = env.connect(env.tenant(0)).await;
    let refused = |e: tokio_postgres::Error, what: &str| {
        let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
        assert_eq!(db.code().code(), "0A000", "{what}: {}", db.message());
        assert!(
            db.message().contains("RefusePinning"),
            "{what}: {}",
            db.message()
        );
    };
    refused(a.batch_execute("LISTEN chan").await.unwrap_err(), "LISTEN");
    refused(
        a.batch_execute("CREATE TEMP TABLE scratch (x int)")
            .await
            .unwrap_err(),
        "temp table",
    );
    // Extended protocol: the statement is prepared, refused when bound.
    refused(
        a.query("SELECT pg_advisory_lock($1)", &[&5i64])
            .await
            .unwrap_err(),
        "advisory lock",
    );
    // Inside a transaction the refusal aborts it, as a server error would.
    a.batch_execute("BEGIN").await.unwrap();
    refused(
        a.batch_execute("LISTEN chan").await.unwrap_err(),
        "LISTEN in a transaction",
    );
    let aborted = a.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(aborted.code().map(|c| c.code()), Some("25P02"));
    a.batch_execute("ROLLBACK").await.unwrap();
    // Nothing pinned: no pinned gauge, no session state on the server connection, and the
    // client goes on sharing it.
    let body = metrics(env.perseus.metrics_port()).await;
    assert!(
        body.lines()
            .any(|l| l == "perseus_client_connections_pinned 0"),
        "pinned gauge: {body}"
    );
    let b = env.connect(env.tenant(0)).await;
    assert_eq!(
        show(&b, "SELECT count(*) FROM pg_listening_channels()")
            .await
            .as_deref(),
        Some("0")
    );
    assert_eq!(show(&a, "SELECT v FROM t").await.as_deref(), Some("0"));
}
