//! Login through perseus: schema names that need quoting, and the documented errors for bad
//! credentials and incomplete startup packets.

use crate::support;

use std::time::Duration;

use support::datapath::{Env, db_error, pool, simple_rows, tenant_index};
use support::wire::{Wire, encryption_request, startup_with_version, tags};
use support::{poll, quote_ident};

const ODD: &str = "My \"Odd\" Schema";

#[tokio::test]
async fn schema_needing_quotes_works_through_options_and_schema_search_path() {
    let env = Env::start(&[ODD, "plain_one"], pool(2)).await;
    let odd = env.tenant(0);

    // libpq-style options, simple and extended protocol.
    let client = env.connect(odd).await;
    let rows = simple_rows(
        &client
            .simple_query("SELECT current_schema(), v FROM t")
            .await
            .unwrap(),
    );
    assert_eq!(rows, vec![vec![Some(ODD.to_owned()), Some("0".to_owned())]]);
    let row = client
        .query_one("SELECT current_schema(), v FROM t WHERE v = $1", &[&0i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), ODD);
    client
        .batch_execute("CREATE TABLE made_here (x int); INSERT INTO made_here VALUES (7)")
        .await
        .unwrap();

    // The Go daemon's startup parameter, with the bare name and with a quoted one.
    for given in [ODD.to_owned(), quote_ident(ODD)] {
        let mut w = Wire::connect(env.perseus.port()).await;
        w.login(
            &[
                ("user", &odd.source_user),
                ("database", &odd.source_db),
                ("schema_search_path", &given),
            ],
            &odd.password,
        )
        .await
        .unwrap_or_else(|e| panic!("login with schema_search_path={given:?}: {}", e.message()));
        let msgs = w.query("SELECT current_schema(), x FROM made_here").await;
        let rows: Vec<_> = msgs
            .iter()
            .filter(|m| m.tag == b'D')
            .map(|m| m.data_row())
            .collect();
        assert_eq!(
            rows,
            vec![vec![Some(ODD.to_owned()), Some("7".to_owned())]],
            "schema_search_path={given:?}: {}",
            tags(&msgs)
        );
    }

    // The table landed in the quoted schema, nowhere else.
    let dest = env.dest().await;
    let n: i64 = dest
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'made_here' AND schemaname = $1",
            &[&ODD],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let elsewhere: i64 = dest
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'made_here' AND schemaname <> $1",
            &[&ODD],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(elsewhere, 0);

    // The other tenant does not see it.
    let plain = env.connect(env.tenant(1)).await;
    let e = plain
        .simple_query("SELECT x FROM made_here")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42P01", "{e}");
}

#[tokio::test]
async fn bad_credentials_all_look_like_a_wrong_password() {
    let env = Env::start(&["tenant_a", "tenant_b"], pool(2)).await;
    let a = env.tenant(0).clone();
    let expect = |user: &str| format!("password authentication failed for user \"{user}\"");

    let cases = [
        ("wrong password", {
            let mut c = env.client_config(&a);
            c.password("not-the-password");
            c
        }),
        ("another tenant's password", {
            let mut c = env.client_config(&a);
            c.password(&env.tenant(1).password);
            c
        }),
        ("unknown tenant schema", {
            let mut c = env.client_config(&a);
            c.options("-c search_path=no_such_tenant");
            c
        }),
        ("unknown tenant database", {
            let mut c = env.client_config(&a);
            c.dbname("no_such_db");
            c
        }),
        ("wrong user", {
            let mut c = env.client_config(&a);
            c.user(&env.tenant(1).source_user);
            c
        }),
    ];
    for (what, config) in cases {
        let user = config.get_user().unwrap().to_owned();
        let e = match config.connect(tokio_postgres::NoTls).await {
            Ok(_) => panic!("{what}: login succeeded"),
            Err(e) => e,
        };
        let (code, message) = db_error(&e);
        assert_eq!(code, "28P01", "{what}: {message}");
        assert_eq!(message, expect(&user), "{what}");
    }

    // The right credentials still work after all that.
    let client = env.connect(&a).await;
    let v = tenant_index(&client).await;
    assert_eq!(v, 0);

    // The log tells the operator which failure it was; no password ever reaches it.
    let logged = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let log = env.perseus.log();
        ["unknown tenant", "wrong password", "source_user"]
            .iter()
            .all(|s| log.contains(s))
            .then_some(log)
    });
    let log = logged.unwrap_or_else(|| {
        panic!(
            "perseus log does not name each failure kind:\n{}",
            env.perseus.log()
        )
    });
    for secret in [
        "not-the-password",
        a.password.as_str(),
        env.tenant(1).password.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "a password reached the log: {secret}"
        );
    }
}

#[tokio::test]
async fn incomplete_startup_packets_say_what_is_missing() {
    let env = Env::start(&["tenant_a"], pool(1)).await;
    let a = env.tenant(0);
    let port = env.perseus.port();
    let schema = ("schema_search_path", a.source_schema.as_str());
    let user = ("user", a.source_user.as_str());
    let db = ("database", a.source_db.as_str());

    let cases = [
        ("no user", vec![db, schema], "28000", "user"),
        ("no database", vec![user, schema], "3D000", "database"),
        ("no schema", vec![user, db], "3F000", "schema"),
    ];
    for (what, params, code, word) in cases {
        let mut w = Wire::connect(port).await;
        let e = match w.login(&params, &a.password).await {
            Ok(_) => panic!("{what}: login succeeded"),
            Err(e) => e,
        };
        assert_eq!(e.code(), code, "{what}: {}", e.message());
        assert!(
            e.message().contains(word),
            "{what}: message {:?} does not mention {word}",
            e.message()
        );
        assert!(w.closed().await);
    }

    // What tokio-postgres sends without a database or a schema.
    let mut no_db = tokio_postgres::Config::new();
    no_db
        .host("127.0.0.1")
        .port(port)
        .user(&a.source_user)
        .password(&a.password)
        .options(support::datapath::tenant_options(a));
    let e = no_db.connect(tokio_postgres::NoTls).await.err().unwrap();
    assert_eq!(db_error(&e).0, "3D000", "{e}");
    let mut no_schema = tokio_postgres::Config::new();
    no_schema
        .host("127.0.0.1")
        .port(port)
        .user(&a.source_user)
        .password(&a.password)
        .dbname(&a.source_db);
    let e = no_schema
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(db_error(&e).0, "3F000", "{e}");

    // Two different schemas named at once is refused, naming both.
    let mut w = Wire::connect(port).await;
    let e = w
        .login(
            &[user, db, schema, ("options", "-c search_path=other_one")],
            &a.password,
        )
        .await
        .expect_err("conflicting schemas must be refused");
    assert_eq!(e.tag, b'E');
    assert!(
        e.message().contains("other_one") && e.message().contains(&a.source_schema),
        "conflict message should name both schemas: {:?}",
        e.message()
    );

    // The same schema named both ways is fine.
    let mut w = Wire::connect(port).await;
    w.login(
        &[user, db, schema, ("options", "-c search_path=tenant_a")],
        &a.password,
    )
    .await
    .unwrap_or_else(|e| panic!("same schema twice: {}", e.message()));
}

#[tokio::test]
async fn encryption_requests_are_declined_and_old_protocols_refused() {
    let env = Env::start(&["tenant_a"], pool(1)).await;
    let a = env.tenant(0);
    let port = env.perseus.port();
    let params = [
        ("user", a.source_user.as_str()),
        ("database", a.source_db.as_str()),
        ("schema_search_path", a.source_schema.as_str()),
    ];

    for ssl in [true, false] {
        let mut w = Wire::connect(port).await;
        w.send(&encryption_request(ssl)).await;
        assert_eq!(w.read_byte().await, Some(b'N'), "ssl={ssl}");
        w.login(&params, &a.password)
            .await
            .unwrap_or_else(|e| panic!("login after the request (ssl={ssl}): {}", e.message()));
        let msgs = w.query("SELECT v FROM t").await;
        assert_eq!(tags(&msgs), "TDCZ");
        assert_eq!(msgs[1].data_row(), vec![Some("0".to_owned())]);
    }

    // Protocol 2.0 gets an ErrorResponse, not a silent hang-up.
    let mut w = Wire::connect(port).await;
    w.send(&startup_with_version(2 << 16, &params)).await;
    let m = w.recv().await.expect("an ErrorResponse for protocol 2.0");
    assert_eq!(m.tag, b'E', "{m:?}");
    assert!(!m.code().is_empty());
    assert!(w.closed().await);

    // perseus is still serving.
    let client = env.connect(a).await;
    assert_eq!(
        client
            .query_one("SELECT 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}
