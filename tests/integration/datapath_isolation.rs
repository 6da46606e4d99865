//! Tenant isolation on shared server connections: two tenants with identically named tables in
//! their own schemas of one destination database, many interleaved clients, thousands of
//! transactions, and clients that point search_path elsewhere on purpose.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::datapath::{Env, pool, simple_rows};
use support::quote_ident;

const CLIENTS: usize = 24;
const TXNS_PER_CLIENT: i32 = 125;
/// Schemas a misbehaving client points search_path at; each has its own `items` table, so a
/// write that leaks there is counted rather than failing.
const DECOYS: [&str; 2] = ["decoy", "public"];

fn items_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE {}.items (id bigserial PRIMARY KEY, owner text NOT NULL, \
         client int NOT NULL, n int NOT NULL)",
        quote_ident(schema)
    )
}

/// What one client did, for the final accounting.
#[derive(Default)]
struct Tally {
    /// Rows written to its own schema.
    own: i64,
    /// Rows written to the `decoy` schema on purpose (inside one transaction).
    decoy: i64,
}

/// One step that points search_path away from the tenant, in a way that outlives its
/// statement unless the pooler resets it. The next step must be back in the tenant's schema.
async fn misbehave(
    client: &tokio_postgres::Client,
    step: i32,
    other_tenant: &str,
    c: usize,
    tally: &mut Tally,
) {
    match (step / 10) % 6 {
        0 => client
            .batch_execute("SET search_path TO decoy")
            .await
            .unwrap(),
        1 => {
            let row = client
                .query_one("SELECT set_config('search_path', 'decoy', false)", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "decoy");
        }
        2 => client
            .batch_execute(&format!("set SEARCH_PATH = {}", quote_ident(other_tenant)))
            .await
            .unwrap(),
        3 => client.batch_execute("RESET search_path").await.unwrap(),
        4 => {
            // Within its own transaction the client gets what it asked for.
            let rows = simple_rows(
                &client
                    .simple_query(&format!(
                        "BEGIN; SET LOCAL search_path TO decoy; \
                         INSERT INTO items (owner, client, n) VALUES ('decoy', {c}, {step}); \
                         SELECT current_schema(); COMMIT"
                    ))
                    .await
                    .unwrap(),
            );
            assert_eq!(rows, vec![vec![Some("decoy".to_owned())]]);
            tally.decoy += 1;
        }
        _ => {
            // A SET and a write in one implicit transaction: the write follows the SET.
            let rows = simple_rows(
                &client
                    .simple_query(&format!(
                        "SET search_path TO decoy; \
                         INSERT INTO items (owner, client, n) VALUES ('decoy', {c}, {step}); \
                         SELECT current_schema()"
                    ))
                    .await
                    .unwrap(),
            );
            assert_eq!(rows, vec![vec![Some("decoy".to_owned())]]);
            tally.decoy += 1;
        }
    }
}

/// Checks what the client reads: only its tenant's rows, all of its own committed writes,
/// and its tenant's schema as current_schema.
fn check_read(what: &str, c: usize, schema: &str, got: (i64, i64, String), tally: &Tally) {
    let (foreign, mine, current) = got;
    assert_eq!(
        foreign, 0,
        "client {c} ({schema}) {what}: read another tenant's rows"
    );
    assert_eq!(mine, tally.own, "client {c} ({schema}) {what}: own rows");
    assert_eq!(current, schema, "client {c} {what}: current_schema");
}

async fn run_client(env: Arc<Env>, c: usize) -> Tally {
    let tenant = env.tenant(c % 2).clone();
    let other = env.tenant(1 - c % 2).source_schema.clone();
    let schema = tenant.source_schema.clone();
    let misbehaves = c % 4 == 3;
    let client = env.connect(&tenant).await;
    let id = c as i32;
    let mut tally = Tally::default();
    let read_sql = "SELECT count(*) FILTER (WHERE owner <> $1), \
                    count(*) FILTER (WHERE client = $2), current_schema() FROM items";
    for step in 0..TXNS_PER_CLIENT {
        if misbehaves && step % 10 == 5 {
            misbehave(&client, step, &other, c, &mut tally).await;
            continue;
        }
        match step % 5 {
            0 => {
                let n = client
                    .execute(
                        "INSERT INTO items (owner, client, n) VALUES ($1, $2, $3)",
                        &[&schema, &id, &step],
                    )
                    .await
                    .unwrap();
                assert_eq!(n, 1);
                tally.own += 1;
            }
            1 => {
                client
                    .batch_execute(&format!(
                        "INSERT INTO items (owner, client, n) VALUES ({}, {id}, {step})",
                        support::quote_literal(&schema)
                    ))
                    .await
                    .unwrap();
                tally.own += 1;
            }
            2 => {
                let row = client.query_one(read_sql, &[&schema, &id]).await.unwrap();
                check_read(
                    "extended read",
                    c,
                    &schema,
                    (row.get(0), row.get(1), row.get(2)),
                    &tally,
                );
            }
            3 => {
                let rows = simple_rows(
                    &client
                        .simple_query(&format!(
                            "SELECT count(*) FILTER (WHERE owner <> {}), \
                             count(*) FILTER (WHERE client = {id}), current_schema() FROM items",
                            support::quote_literal(&schema)
                        ))
                        .await
                        .unwrap(),
                );
                let r = &rows[0];
                let num = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
                check_read(
                    "simple read",
                    c,
                    &schema,
                    (num(0), num(1), r[2].clone().unwrap()),
                    &tally,
                );
            }
            _ => {
                // An explicit transaction: write, read it back, commit.
                let rows = simple_rows(
                    &client
                        .simple_query(&format!(
                            "BEGIN; INSERT INTO items (owner, client, n) VALUES ({}, {id}, {step}); \
                             SELECT count(*) FROM items WHERE client = {id}; COMMIT",
                            support::quote_literal(&schema)
                        ))
                        .await
                        .unwrap(),
                );
                tally.own += 1;
                assert_eq!(
                    rows,
                    vec![vec![Some(tally.own.to_string())]],
                    "client {c} ({schema}) transaction read"
                );
            }
        }
    }
    // Session end: everything it wrote is visible to it, nothing else.
    let row = client.query_one(read_sql, &[&schema, &id]).await.unwrap();
    check_read(
        "final read",
        c,
        &schema,
        (row.get(0), row.get(1), row.get(2)),
        &tally,
    );
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_tenants_never_see_each_other() {
    let env = Arc::new(Env::start(&["tenant_a", "tenant_b"], pool(4)).await);
    let dest = env.dest().await;
    for schema in env
        .tenants
        .iter()
        .map(|t| t.source_schema.as_str())
        .chain(DECOYS)
    {
        if schema == "decoy" {
            dest.batch_execute("CREATE SCHEMA decoy").await.unwrap();
        }
        dest.batch_execute(&items_ddl(schema)).await.unwrap();
    }

    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(run_client(env.clone(), c)))
        .collect();
    let mut own = [0i64; 2];
    let mut decoy = 0;
    for (c, w) in workers.into_iter().enumerate() {
        let tally = tokio::time::timeout(Duration::from_secs(90), w)
            .await
            .expect("clients finish")
            .unwrap_or_else(|e| panic!("client {c}: {e}"));
        own[c % 2] += tally.own;
        decoy += tally.decoy;
    }
    assert!(decoy > 0, "the misbehaving clients ran");

    // Every write landed in its writer's schema, and nothing leaked to the decoys except the
    // writes made there on purpose.
    let super_dest = env.dest_super().await;
    for (i, t) in env.tenants.iter().enumerate() {
        let row = super_dest
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE owner <> $1 OR client % 2 <> $2) \
                     FROM {}.items",
                    quote_ident(&t.source_schema)
                ),
                &[&t.source_schema, &(i as i32)],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), own[i], "rows in {}", t.source_schema);
        assert_eq!(
            row.get::<_, i64>(1),
            0,
            "foreign rows in {}",
            t.source_schema
        );
    }
    let decoy_rows: i64 = super_dest
        .query_one(
            "SELECT count(*) FROM decoy.items WHERE owner = 'decoy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let decoy_all: i64 = super_dest
        .query_one("SELECT count(*) FROM decoy.items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((decoy_rows, decoy_all), (decoy, decoy), "rows in decoy");
    let public: i64 = super_dest
        .query_one("SELECT count(*) FROM public.items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(public, 0, "rows leaked into public");
    let total = own[0] + own[1] + decoy;
    assert!(total > 1500, "{total} writes");
}

/// How one misbehaving statement is sent.
enum Via {
    Simple(&'static str),
    /// tokio-postgres `query`: a named statement, prepared and closed around one execution.
    Named(&'static str),
    /// tokio-postgres `query_typed`: the unnamed statement.
    Unnamed(&'static str),
}

/// With one server connection, every way of pointing search_path elsewhere is followed by
/// clients of both tenants that must find their own schema again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_changes_never_reach_the_next_client() {
    let env = Env::start(&["tenant_a", "tenant_b"], pool(1)).await;
    let dest = env.dest().await;
    dest.batch_execute("CREATE SCHEMA decoy").await.unwrap();
    let sneaky = env.connect(env.tenant(1)).await;
    let same_tenant = env.connect(env.tenant(1)).await;
    let other_tenant = env.connect(env.tenant(0)).await;

    let cases = [
        Via::Simple("SET search_path TO decoy"),
        Via::Simple("set SEARCH_PATH = public"),
        Via::Simple("SELECT set_config('search_path', 'decoy', false)"),
        Via::Simple("RESET search_path"),
        Via::Simple("DISCARD ALL"),
        Via::Simple("SET search_path TO decoy; SELECT 1"),
        Via::Named("SELECT set_config('search_path', 'decoy', false)"),
        Via::Named("SET search_path TO decoy"),
        Via::Named("RESET search_path"),
        Via::Unnamed("SELECT set_config('search_path', 'decoy', false)"),
        Via::Unnamed("SET search_path TO decoy"),
    ];
    // Every case runs before every check, so each checker may land on the dirty connection;
    // all failures are collected so one run shows every leaking path.
    let mut leaks = Vec::new();
    for via in &cases {
        for (who, client, schema) in [
            ("same tenant", &same_tenant, "tenant_b"),
            ("other tenant", &other_tenant, "tenant_a"),
            ("the client itself", &sneaky, "tenant_b"),
        ] {
            let (what, result) = match via {
                Via::Simple(sql) => (
                    format!("simple {sql:?}"),
                    sneaky.simple_query(sql).await.map(drop),
                ),
                Via::Named(sql) => (
                    format!("named {sql:?}"),
                    sneaky.query(*sql, &[]).await.map(drop),
                ),
                Via::Unnamed(sql) => (
                    format!("unnamed {sql:?}"),
                    sneaky.query_typed(sql, &[]).await.map(drop),
                ),
            };
            result.unwrap_or_else(|e| panic!("{what}: {e}"));
            let got: String = client
                .query_one("SELECT current_schema()", &[])
                .await
                .unwrap()
                .get(0);
            if got != schema {
                leaks.push(format!(
                    "after {what}: {who}'s next transaction ran in {got:?}, not {schema:?}"
                ));
            }
        }
    }

    // A statement prepared once and executed later, when the connection has served others.
    let stmt = sneaky
        .prepare("SELECT set_config('search_path', 'decoy', false)")
        .await
        .unwrap();
    for round in 0..3 {
        sneaky.query(&stmt, &[]).await.unwrap();
        for (who, client, schema) in [
            ("same tenant", &same_tenant, "tenant_b"),
            ("other tenant", &other_tenant, "tenant_a"),
        ] {
            let got: String = client
                .query_one("SELECT current_schema()", &[])
                .await
                .unwrap()
                .get(0);
            if got != schema {
                leaks.push(format!(
                    "after a prepared set_config executed again (round {round}): {who}'s next \
                     transaction ran in {got:?}, not {schema:?}"
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "search_path leaked:\n{}",
        leaks.join("\n")
    );
}
