//! Protocol behaviour through perseus: failed transactions keep their server connection until
//! ROLLBACK, multi-statement simple queries, NOTICE and NOTIFY, FunctionCall, the extended
//! protocol in any order (Flush, Describe before Bind, pipelined batches with an error), and
//! named prepared statements that never run on the wrong connection.

use crate::support;

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use support::datapath::{Env, SETTLE, db_error, pool, simple_rows};
use support::wire::{Msg, Wire, function_call, tags};
use tokio_postgres::AsyncMessage;

async fn env_with_table(max_open: u32) -> Env {
    let env = Env::start(&["tenant_a"], pool(max_open)).await;
    env.dest()
        .await
        .batch_execute("CREATE TABLE tenant_a.p (x int NOT NULL)")
        .await
        .unwrap();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_keeps_its_connection_until_rollback() {
    // One server connection: whoever holds it in a transaction blocks everyone else.
    let env = env_with_table(1).await;
    let a = env.connect(env.tenant(0)).await;
    let b = env.connect(env.tenant(0)).await;

    let e = a
        .batch_execute("BEGIN; INSERT INTO p VALUES (1); SELECT 1/0")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "22012");
    // B asks for the only connection while A's transaction is failed.
    let waiting = tokio::spawn(async move {
        let rows = simple_rows(&b.simple_query("SELECT count(*) FROM p").await?);
        Ok::<_, tokio_postgres::Error>(rows)
    });
    // Still A's failed transaction, on both protocols.
    let e = a.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "25P02", "{e}");
    let e = a.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
    assert_eq!(db_error(&e).0, "25P02", "{e}");
    a.batch_execute("ROLLBACK").await.unwrap();
    // B ran on a clean connection: no aborted-transaction error, no uncommitted row.
    let rows = tokio::time::timeout(SETTLE, waiting)
        .await
        .expect("B gets the connection after the ROLLBACK")
        .unwrap()
        .expect("B's query runs outside A's failed transaction");
    assert_eq!(rows, vec![vec![Some("0".to_owned())]]);

    // The same through a tokio-postgres Transaction (extended protocol).
    let mut a = a;
    let tx = a.transaction().await.unwrap();
    tx.execute("INSERT INTO p VALUES (2)", &[]).await.unwrap();
    let e = tx
        .query_one("SELECT 1/$1::int", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "22012");
    let e = tx.query_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).0, "25P02");
    tx.rollback().await.unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM p", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_simple_queries() {
    let env = env_with_table(2).await;
    let c = env.connect(env.tenant(0)).await;
    let observer = env.dest_super().await;
    let count_outside = |x: i32| {
        let observer = &observer;
        async move {
            observer
                .query_one("SELECT count(*) FROM tenant_a.p WHERE x = $1", &[&x])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };

    let rows = simple_rows(
        &c.simple_query(
            "INSERT INTO p VALUES (1); INSERT INTO p VALUES (1); \
             SELECT count(*) FROM p; SELECT current_schema(), 'two;semi;colons'",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        rows,
        vec![
            vec![Some("2".to_owned())],
            vec![
                Some("tenant_a".to_owned()),
                Some("two;semi;colons".to_owned())
            ]
        ]
    );
    assert_eq!(count_outside(1).await, 2);

    // An error rolls back the whole implicit transaction; the session goes on.
    let e = c
        .simple_query("INSERT INTO p VALUES (3); SELECT 1/0; INSERT INTO p VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "22012");
    assert_eq!(count_outside(3).await, 0);
    let rows = simple_rows(&c.simple_query("SELECT 5").await.unwrap());
    assert_eq!(rows, vec![vec![Some("5".to_owned())]]);

    // Empty query strings get EmptyQueryResponse and leave the session usable.
    for empty in ["", " ", ";", "-- only a comment"] {
        let msgs = c.simple_query(empty).await.unwrap();
        assert!(simple_rows(&msgs).is_empty(), "{empty:?}");
    }
    let rows = simple_rows(&c.simple_query("SELECT 6").await.unwrap());
    assert_eq!(rows, vec![vec![Some("6".to_owned())]]);

    // Explicit transaction control inside one string.
    c.simple_query("BEGIN; INSERT INTO p VALUES (4); COMMIT; INSERT INTO p VALUES (4)")
        .await
        .unwrap();
    assert_eq!(count_outside(4).await, 2);

    // A string that leaves a transaction open keeps the connection for the next one. (The
    // BEGIN turns the implicit block into a real one, so the first INSERT waits for COMMIT.)
    c.simple_query("INSERT INTO p VALUES (6); BEGIN; INSERT INTO p VALUES (7)")
        .await
        .unwrap();
    assert_eq!(count_outside(6).await, 0);
    assert_eq!(count_outside(7).await, 0);
    let rows = simple_rows(
        &c.simple_query("SELECT count(*) FROM p WHERE x = 7")
            .await
            .unwrap(),
    );
    assert_eq!(
        rows,
        vec![vec![Some("1".to_owned())]],
        "sees its own open transaction"
    );
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!((count_outside(6).await, count_outside(7).await), (1, 1));
}

async fn next_message(rx: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>) -> AsyncMessage {
    tokio::time::timeout(SETTLE, rx.recv())
        .await
        .expect("an asynchronous message arrives")
        .expect("the connection is still open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_notifications_arrive() {
    let env = env_with_table(2).await;
    let (c, mut rx) = env.connect_with_messages(env.tenant(0)).await;

    c.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        .await
        .unwrap();
    match next_message(&mut rx).await {
        AsyncMessage::Notice(n) => assert_eq!(n.message(), "hello 42"),
        other => panic!("expected a notice, got {other:?}"),
    }
    c.batch_execute(
        "CREATE FUNCTION noisy(v int) RETURNS int LANGUAGE plpgsql AS \
         $$ BEGIN RAISE NOTICE 'noisy % in %', v, current_schema(); RETURN v; END $$",
    )
    .await
    .unwrap();
    let v: i32 = c
        .query_one("SELECT noisy($1)", &[&7i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
    match next_message(&mut rx).await {
        AsyncMessage::Notice(n) => assert_eq!(n.message(), "noisy 7 in tenant_a"),
        other => panic!("expected a notice, got {other:?}"),
    }

    // LISTEN keeps the listener on its server connection; a NOTIFY from another client
    // reaches it while it is idle.
    let (listener, mut lrx) = env.connect_with_messages(env.tenant(0)).await;
    listener.batch_execute("LISTEN perseus_chan").await.unwrap();
    c.batch_execute("NOTIFY perseus_chan, 'payload one'")
        .await
        .unwrap();
    c.query("SELECT pg_notify('perseus_chan', $1)", &[&"payload two"])
        .await
        .unwrap();
    for expected in ["payload one", "payload two"] {
        match next_message(&mut lrx).await {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "perseus_chan");
                assert_eq!(n.payload(), expected);
            }
            other => panic!("expected a notification, got {other:?}"),
        }
    }
}

/// Sends `bytes` and collects messages until `n` ReadyForQuery have arrived.
async fn exchange(w: &mut Wire, bytes: &[u8], ready: usize) -> Vec<Msg> {
    w.send(bytes).await;
    let mut out = Vec::new();
    for _ in 0..ready {
        out.extend(w.until_ready().await);
    }
    out
}

fn parse(name: &str, sql: &str, buf: &mut BytesMut) {
    frontend::parse(name, sql, std::iter::empty(), buf).unwrap();
}

fn bind(portal: &str, stmt: &str, text_params: &[&str], buf: &mut BytesMut) {
    let r = frontend::bind(
        portal,
        stmt,
        std::iter::empty::<i16>(),
        text_params.iter(),
        |p, out| {
            out.extend_from_slice(p.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        buf,
    );
    assert!(r.is_ok(), "encode Bind");
}

fn rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::data_row)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_in_any_order_and_function_call() {
    // One server connection, shared with a busy neighbour, so every release and checkout
    // between the steps below really happens.
    let env = env_with_table(1).await;
    let neighbour = env.connect(env.tenant(0)).await;
    let busy = tokio::spawn(async move {
        for i in 0..300i32 {
            let row = neighbour
                .query_one("SELECT $1::int, current_schema()", &[&i])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), i);
            assert_eq!(row.get::<_, String>(1), "tenant_a");
        }
    });
    let a = env.tenant(0);
    let mut w = Wire::connect(env.perseus.port()).await;
    w.login_tenant(a).await;

    // Parse/Bind/Describe/Execute then Flush: answers come before any Sync, and the
    // connection stays ours until the Sync.
    let mut buf = BytesMut::new();
    parse("", "SELECT $1::int + 1, current_schema()", &mut buf);
    bind("", "", &["41"], &mut buf);
    frontend::describe(b'P', "", &mut buf).unwrap();
    frontend::execute("", 0, &mut buf).unwrap();
    frontend::flush(&mut buf);
    w.send(&buf).await;
    let mut got = Vec::new();
    while got.last().map(|m: &Msg| m.tag) != Some(b'C') {
        got.push(w.recv().await.expect("answers before Sync"));
    }
    assert_eq!(tags(&got), "12TDC");
    assert_eq!(
        rows(&got),
        vec![vec![Some("42".to_owned()), Some("tenant_a".to_owned())]]
    );
    let mut buf = BytesMut::new();
    frontend::sync(&mut buf);
    assert_eq!(tags(&exchange(&mut w, &buf, 1).await), "Z");

    // Describe the statement before binding, across two round trips.
    let mut buf = BytesMut::new();
    parse("", "SELECT $1::text || '!' AS shout", &mut buf);
    frontend::describe(b'S', "", &mut buf).unwrap();
    frontend::flush(&mut buf);
    w.send(&buf).await;
    let mut got = Vec::new();
    while got.last().map(|m: &Msg| m.tag) != Some(b'T') {
        got.push(
            w.recv()
                .await
                .expect("ParameterDescription and RowDescription"),
        );
    }
    assert_eq!(tags(&got), "1tT");
    let mut buf = BytesMut::new();
    bind("", "", &["hey"], &mut buf);
    frontend::execute("", 0, &mut buf).unwrap();
    frontend::sync(&mut buf);
    let got = exchange(&mut w, &buf, 1).await;
    assert_eq!(tags(&got), "2DCZ");
    assert_eq!(rows(&got), vec![vec![Some("hey!".to_owned())]]);

    // A pipelined batch of three syncs, the middle one failing: the server skips to its
    // Sync, the others run.
    let mut buf = BytesMut::new();
    for (i, sql) in ["SELECT 1", "SELECT * FROM no_such_table", "SELECT 3"]
        .iter()
        .enumerate()
    {
        parse("", sql, &mut buf);
        bind("", "", &[], &mut buf);
        frontend::execute("", 0, &mut buf).unwrap();
        if i == 1 {
            frontend::close(b'S', "", &mut buf).unwrap();
        }
        frontend::sync(&mut buf);
    }
    let got = exchange(&mut w, &buf, 3).await;
    assert_eq!(tags(&got), "12DCZEZ12DCZ", "{got:?}");
    assert_eq!(got[5].code(), "42P01");
    assert_eq!(
        rows(&got),
        vec![vec![Some("1".to_owned())], vec![Some("3".to_owned())]]
    );

    // FunctionCall, the fast-path protocol.
    let oid: u32 = env
        .dest()
        .await
        .query_one("SELECT 'pg_backend_pid'::regproc::oid", &[])
        .await
        .unwrap()
        .get(0);
    let got = exchange(&mut w, &function_call(oid), 1).await;
    assert_eq!(tags(&got), "VZ", "{got:?}");
    let body = &got[0].body;
    let len = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    let pid = String::from_utf8_lossy(&body[4..4 + len]).into_owned();
    assert!(
        pid.parse::<i32>().is_ok(),
        "pg_backend_pid() returned {pid:?}"
    );

    tokio::time::timeout(Duration::from_secs(60), busy)
        .await
        .expect("the neighbour finishes")
        .expect("the neighbour always saw its own results");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statements_never_run_the_wrong_query() {
    let env = env_with_table(2).await;
    let a = env.connect(env.tenant(0)).await;
    let b = env.connect(env.tenant(0)).await;
    // tokio-postgres names statements per client (s0, s1, ...): both get the same names.
    let sa = a.prepare("SELECT 'a:' || $1::text").await.unwrap();
    let sb = b.prepare("SELECT 'b:' || $1::text").await.unwrap();
    for i in 0..50 {
        let arg = i.to_string();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&arg];
        let (ra, rb) = futures::join!(a.query_one(&sa, &params), b.query_one(&sb, &params));
        assert_eq!(ra.unwrap().get::<_, String>(0), format!("a:{i}"));
        assert_eq!(rb.unwrap().get::<_, String>(0), format!("b:{i}"));
        // A few one-shot queries in between, on whichever connection they get.
        if i % 10 == 0 {
            let v: i32 = a.query_one("SELECT $1::int", &[&i]).await.unwrap().get(0);
            assert_eq!(v, i);
        }
    }
    // Once the statements are closed, a third client gets a connection too.
    drop(sa);
    drop(sb);
    let c = env.connect(env.tenant(0)).await;
    let v = tokio::time::timeout(SETTLE, c.query_one("SELECT 9::int", &[]))
        .await
        .expect("a connection is free once no statement is open")
        .unwrap()
        .get::<_, i32>(0);
    assert_eq!(v, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_both_ways() {
    // One server connection shared with a neighbour, so a half-streamed message would show
    // up as garbage in someone's next result.
    let env = env_with_table(1).await;
    let big_client = env.connect(env.tenant(0)).await;
    let neighbour = env.connect(env.tenant(0)).await;
    let busy = tokio::spawn(async move {
        for i in 0..100i32 {
            let row = neighbour
                .query_one("SELECT $1::int, repeat('n', 1000)", &[&i])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), i);
            assert_eq!(row.get::<_, String>(1), "n".repeat(1000));
        }
    });
    let param: String = (0..3_000_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for round in 0..3 {
        // A 3 MB parameter in, an 8 MB row out, a 3 MB simple query text in.
        let row = big_client
            .query_one(
                "SELECT length($1::text), right($1::text, 5), left($1::text, 3)",
                &[&param],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 3_000_000, "round {round}");
        assert_eq!(row.get::<_, String>(1), param[param.len() - 5..].to_owned());
        assert_eq!(row.get::<_, String>(2), "abc");
        let out: String = big_client
            .query_one("SELECT repeat('xy', 4000000)", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(out.len(), 8_000_000, "round {round}");
        assert!(
            out.bytes()
                .enumerate()
                .all(|(i, b)| b == if i % 2 == 0 { b'x' } else { b'y' })
        );
        let rows = simple_rows(
            &big_client
                .simple_query(&format!("SELECT length('{param}')"))
                .await
                .unwrap(),
        );
        assert_eq!(
            rows,
            vec![vec![Some("3000000".to_owned())]],
            "round {round}"
        );
    }
    tokio::time::timeout(Duration::from_secs(60), busy)
        .await
        .expect("the neighbour finishes")
        .expect("the neighbour always saw its own results");
}
