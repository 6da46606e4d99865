//! migrations/ creates perseus_auth exactly as documented (the Go Perseus's table), whether
//! an operator applies it with psql or with `perseus --migrate`, and applying it again
//! changes nothing.

use crate::support;

use support::{perseus, shared_pg, tenant, unique_name};

/// (column, data type, character length, nullable) as information_schema reports them.
const EXPECTED_COLUMNS: &[(&str, &str, Option<i32>, &str)] = &[
    ("id", "integer", None, "NO"),
    ("source_db", "character varying", Some(64), "NO"),
    ("source_schema", "character varying", Some(64), "NO"),
    ("source_user", "character varying", Some(64), "NO"),
    ("source_pass_hashed", "character varying", Some(128), "NO"),
    ("dest_host", "character varying", Some(512), "NO"),
    ("dest_db", "character varying", Some(64), "NO"),
    ("dest_user", "character varying", Some(64), "NO"),
    ("dest_pass_enc", "character varying", Some(2048), "NO"),
];

#[tokio::test]
async fn psql_applies_the_migration_idempotently() {
    let pg = shared_pg();
    let db = unique_name("migrate_psql");
    pg.create_database(&db);
    let file = tenant::auth_migration_path();
    let file = file.to_str().expect("UTF-8 path");
    for run in 1..=2 {
        let out = pg.psql(&db, &["-f", file]);
        assert!(
            out.status.success(),
            "psql -f run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_table(&pg.connect(&db).await).await;
}

#[tokio::test]
async fn perseus_migrate_applies_the_migration_idempotently() {
    let pg = shared_pg();
    let db = unique_name("migrate_cli");
    pg.create_database(&db);
    let config = serde_json::json!({
        "AuthDBSettings": { "AuthDBDSN": format!("{}?sslmode=disable", pg.dsn_for(&db)) }
    });
    for run in 1..=2 {
        let out = perseus::run(&config, &["--migrate"]);
        assert!(
            out.status.success(),
            "perseus --migrate run {run} ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_table(&pg.connect(&db).await).await;
}

#[tokio::test]
async fn library_migration_matches_on_a_table_psql_created() {
    // A database set up by hand (or by the Go Perseus) is left as it is.
    let pg = shared_pg();
    let db = unique_name("migrate_mixed");
    pg.create_database(&db);
    let file = tenant::auth_migration_path();
    let out = pg.psql(&db, &["-f", file.to_str().expect("UTF-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = pg.connect(&db).await;
    client
        .batch_execute(
            "INSERT INTO perseus_auth (source_db, source_schema, source_user, source_pass_hashed, \
             dest_host, dest_db, dest_user, dest_pass_enc) VALUES ('d', 's', 'u', 'h', 'host', 'db', 'du', 'enc')",
        )
        .await
        .unwrap();
    tenant::apply_migrations(&client).await;
    check_table(&client).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM perseus_auth", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "migrating again must keep existing tenants");
}

async fn check_table(client: &tokio_postgres::Client) {
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length::int, \
                    is_nullable::text, column_default::text \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'perseus_auth' \
             ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap();
    let columns: Vec<(String, String, Option<i32>, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expected: Vec<(String, String, Option<i32>, String)> = EXPECTED_COLUMNS
        .iter()
        .map(|(n, t, l, null)| (n.to_string(), t.to_string(), *l, null.to_string()))
        .collect();
    assert_eq!(columns, expected);
    let id_default: Option<String> = rows[0].get(4);
    assert!(
        id_default
            .as_deref()
            .is_some_and(|d| d.starts_with("nextval(")),
        "id is not serial: default {id_default:?}"
    );

    assert_eq!(
        constraint_columns(client, "PRIMARY KEY").await,
        vec![vec!["id".to_string()]]
    );
    assert_eq!(
        constraint_columns(client, "UNIQUE").await,
        vec![vec!["source_db".to_string(), "source_schema".to_string()]]
    );

    // The unique constraint is enforced: one row per (source_db, source_schema).
    let insert = "INSERT INTO perseus_auth (source_db, source_schema, source_user, source_pass_hashed, \
                  dest_host, dest_db, dest_user, dest_pass_enc) \
                  VALUES ('dup_db', 'dup_schema', 'u', 'h', 'host', 'db', 'du', 'enc')";
    client.batch_execute(insert).await.unwrap();
    let err = client
        .batch_execute(insert)
        .await
        .expect_err("a second row for the same tenant is refused");
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err}");
    client
        .batch_execute("DELETE FROM perseus_auth WHERE source_db = 'dup_db'")
        .await
        .unwrap();
}

/// Columns of each constraint of `kind` on perseus_auth, in key order.
async fn constraint_columns(client: &tokio_postgres::Client, kind: &str) -> Vec<Vec<String>> {
    let rows = client
        .query(
            "SELECT array_agg(k.column_name::text ORDER BY k.ordinal_position) \
             FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k \
               ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name \
             WHERE c.table_schema = 'public' AND c.table_name = 'perseus_auth' \
               AND c.constraint_type = $1 \
             GROUP BY c.constraint_name ORDER BY c.constraint_name",
            &[&kind],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}
