//! End-to-end smoke: two tenants in one destination database through a running perseus.

mod support;

use support::tenant::{add_tenant, apply_migrations, create_schema};
use support::{Perseus, TenantSpec, quote_ident, shared_pg_and_moto, unique_name};

#[tokio::test]
async fn two_tenants_query_their_own_schema() {
    let (pg, moto) = shared_pg_and_moto();
    let auth_db = unique_name("auth");
    let dest_db = unique_name("dest");
    pg.create_database(&auth_db);
    let role = unique_name("app");
    pg.create_role(&role, "destpw");
    pg.create_database_owned_by(&dest_db, &role);
    let auth = pg.connect(&auth_db).await;
    apply_migrations(&auth).await;
    let dest = pg.connect_as(&dest_db, &role, "destpw").await.unwrap();
    for (schema, val) in [("tenant_a", 1), ("Tenant B", 2)] {
        create_schema(&dest, schema).await;
        dest.batch_execute(&format!(
            "CREATE TABLE {s}.t (v int); INSERT INTO {s}.t VALUES ({val});",
            s = quote_ident(schema)
        ))
        .await
        .unwrap();
        add_tenant(
            &auth,
            &moto.aws_settings(),
            &TenantSpec {
                source_db: "mm".into(),
                source_schema: schema.into(),
                source_user: "mmuser".into(),
                password: format!("pw-{val}"),
                dest_host: pg.host_port(),
                dest_db: dest_db.clone(),
                dest_user: role.clone(),
                dest_password: "destpw".into(),
            },
        )
        .await;
    }
    let perseus = Perseus::start(&support::perseus::config(pg, &auth_db, moto));
    for (schema, val) in [("tenant_a", 1), ("Tenant B", 2)] {
        let dsn = format!(
            "host=127.0.0.1 port={} user=mmuser password=pw-{val} dbname=mm options='-c search_path=\"{}\"'",
            perseus.port(),
            schema.replace(' ', "\\\\ ")
        );
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect {schema}: {e}\n{}", perseus.log()));
        tokio::spawn(conn);
        let rows = client.simple_query("SELECT v FROM t").await.unwrap();
        let got: Vec<_> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![val.to_string()]);
        let row = client
            .query_one("SELECT v FROM t WHERE v = $1", &[&val])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), val);
    }
}
