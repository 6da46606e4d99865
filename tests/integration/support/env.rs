//! A ready-made tenant world: an auth DB with perseus_auth, one destination database owned by
//! its own role, and tenants (one schema each, with a table `t` holding the tenant's number).

use perseus::config::Config;

use super::tenant::{add_tenant, apply_migrations, create_schema};
use super::{Moto, PgCluster, TenantSpec, quote_ident, shared_pg_and_moto, unique_name};

pub struct TenantEnv {
    pub pg: &'static PgCluster,
    pub moto: &'static Moto,
    pub auth_db: String,
    pub dest_db: String,
    pub dest_role: String,
    pub tenants: Vec<TenantSpec>,
}

pub const DEST_PASSWORD: &str = "dest-secret";

impl TenantEnv {
    /// Tenant `i` gets schema `schemas[i]`, user `user_i`, password `pw-i`, and `t(v) = i`.
    pub async fn new(schemas: &[&str]) -> TenantEnv {
        let (pg, moto) = shared_pg_and_moto();
        let auth_db = unique_name("auth");
        let dest_db = unique_name("dest");
        let dest_role = unique_name("app");
        pg.create_database(&auth_db);
        pg.create_role(&dest_role, DEST_PASSWORD);
        pg.create_database_owned_by(&dest_db, &dest_role);
        let auth = pg.connect(&auth_db).await;
        apply_migrations(&auth).await;
        let dest = pg
            .connect_as(&dest_db, &dest_role, DEST_PASSWORD)
            .await
            .expect("connect to the destination as its owner");
        let mut tenants = Vec::new();
        for (i, schema) in schemas.iter().enumerate() {
            create_schema(&dest, schema).await;
            dest.batch_execute(&format!(
                "CREATE TABLE {s}.t (v int); INSERT INTO {s}.t VALUES ({i});",
                s = quote_ident(schema)
            ))
            .await
            .expect("create the tenant table");
            let spec = TenantSpec {
                source_db: "mm".into(),
                source_schema: schema.to_string(),
                source_user: format!("user_{i}"),
                password: format!("pw-{i}"),
                dest_host: pg.host_port(),
                dest_db: dest_db.clone(),
                dest_user: dest_role.clone(),
                dest_password: DEST_PASSWORD.into(),
            };
            add_tenant(&auth, &moto.aws_settings(), &spec).await;
            tenants.push(spec);
        }
        TenantEnv {
            pg,
            moto,
            auth_db,
            dest_db,
            dest_role,
            tenants,
        }
    }

    /// A daemon config pointing at this world's auth DB and KMS.
    pub fn config(&self) -> Config {
        super::perseus::config(self.pg, &self.auth_db, self.moto)
    }

    /// A libpq-style connection string for tenant `i` through perseus on `port`.
    pub fn dsn(&self, port: u16, i: usize) -> String {
        let t = &self.tenants[i];
        format!(
            "host=127.0.0.1 port={port} user={} password={} dbname={} options='-c search_path={}'",
            t.source_user,
            t.password,
            t.source_db,
            t.source_schema
                .replace('\\', "\\\\\\\\")
                .replace(' ', "\\\\ ")
        )
    }

    /// A client of the destination database as its owner, for checking results directly.
    pub async fn dest(&self) -> tokio_postgres::Client {
        self.pg
            .connect_as(&self.dest_db, &self.dest_role, DEST_PASSWORD)
            .await
            .expect("connect to the destination")
    }
}
