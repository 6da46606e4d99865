//! Data-path fixture: an auth database, one destination database owned by one role, N tenants
//! (a schema each in that database, a perseus_auth row each) and a running perseus in front,
//! plus the client plumbing the data-path tests share (tokio-postgres, psql/pgbench, and
//! looking at the destination's backends directly).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use perseus::config::{Config, PoolSettings};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::env::{DEST_PASSWORD, TenantEnv};
use super::perseus::Perseus;
use super::pg::PgCluster;
use super::pg_template::bindir;
use super::tenant::TenantSpec;
use super::{poll_async, quote_ident};

/// How long a test waits for the destination to reach a state it expects.
pub const SETTLE: Duration = Duration::from_secs(15);

/// The libpq `options` value that names `t`'s schema (`PGOPTIONS` too).
pub fn tenant_options(t: &TenantSpec) -> String {
    options_for(&t.source_schema)
}

/// `-c search_path=<schema>` as libpq passes it: the schema quoted as an identifier when it
/// needs it, and spaces and backslashes escaped with a backslash (libpq's `options` syntax).
pub fn options_for(schema: &str) -> String {
    let plain = !schema.is_empty()
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    let value = if plain {
        schema.to_owned()
    } else {
        quote_ident(schema)
    };
    let mut escaped = String::new();
    for c in value.chars() {
        if c == ' ' || c == '\\' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("-c search_path={escaped}")
}

/// Pool settings with `max_open` server connections, all of which may stay idle, and a
/// wait bound long enough for a loaded CI machine.
pub fn pool(max_open: u32) -> PoolSettings {
    PoolSettings {
        max_open,
        max_idle: max_open,
        wait_timeout: Duration::from_secs(60),
        ..PoolSettings::default()
    }
}

/// The tenant's index from its table `t` (every tenant schema has one), read through
/// `client`; panics when the query fails.
pub async fn tenant_index(client: &Client) -> i32 {
    client
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap_or_else(|e| panic!("SELECT v FROM t: {e}"))
        .get(0)
}

/// A tokio-postgres config that logs in as `t` through perseus on 127.0.0.1:`port`.
pub fn client_config(port: u16, t: &TenantSpec) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(&t.source_user)
        .password(&t.password)
        .dbname(&t.source_db)
        .options(tenant_options(t))
        .connect_timeout(Duration::from_secs(20));
    c
}

pub struct Env {
    /// Auth DB, destination database and role, tenant schemas and rows (each schema has a
    /// table `t` holding the tenant's index).
    pub world: TenantEnv,
    pub pg: &'static PgCluster,
    pub dest_db: String,
    /// The destination role (owner of `dest_db` and every tenant schema).
    pub role: String,
    pub role_password: String,
    pub tenants: Vec<TenantSpec>,
    pub config: Config,
    pub perseus: Perseus,
}

impl Env {
    /// Builds a [`TenantEnv`] with one tenant per entry of `schemas` (any spelling), then
    /// starts perseus with `pool` as its PoolSettings.
    pub async fn start(schemas: &[&str], pool: PoolSettings) -> Env {
        Env::start_with(schemas, |config| config.pool = pool).await
    }

    /// As [`Env::start`], with the daemon's configuration adjusted by `tune` first.
    pub async fn start_with(schemas: &[&str], tune: impl FnOnce(&mut Config)) -> Env {
        let world = TenantEnv::new(schemas).await;
        let mut config = world.config();
        tune(&mut config);
        let perseus = Perseus::start(&config);
        Env {
            pg: world.pg,
            dest_db: world.dest_db.clone(),
            role: world.dest_role.clone(),
            role_password: DEST_PASSWORD.into(),
            tenants: world.tenants.clone(),
            world,
            config,
            perseus,
        }
    }

    pub fn tenant(&self, i: usize) -> &TenantSpec {
        &self.tenants[i]
    }

    /// A connection to the destination database as its owner role, bypassing perseus.
    pub async fn dest(&self) -> Client {
        self.pg
            .connect_as(&self.dest_db, &self.role, &self.role_password)
            .await
            .unwrap_or_else(|e| panic!("connect to {} as {}: {e}", self.dest_db, self.role))
    }

    /// A superuser connection to the destination database, bypassing perseus: for
    /// pg_stat_activity and for checking what landed where.
    pub async fn dest_super(&self) -> Client {
        self.pg.connect(&self.dest_db).await
    }

    /// A tokio-postgres config that reaches `t` through perseus.
    pub fn client_config(&self, t: &TenantSpec) -> tokio_postgres::Config {
        client_config(self.perseus.port(), t)
    }

    /// Connects as `t` through perseus; panics with perseus's log when it cannot.
    pub async fn connect(&self, t: &TenantSpec) -> Client {
        self.connect_with(&self.client_config(t)).await
    }

    /// Connects with `config`; panics with perseus's log when it cannot.
    pub async fn connect_with(&self, config: &tokio_postgres::Config) -> Client {
        let (client, conn) = config.connect(NoTls).await.unwrap_or_else(|e| {
            panic!(
                "connect through perseus: {e} ({:?})\n{}",
                e.as_db_error(),
                super::log_tail(&self.perseus.log_path(), 40)
            )
        });
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Connects as `t` and hands back every NoticeResponse / NotificationResponse too.
    pub async fn connect_with_messages(
        &self,
        t: &TenantSpec,
    ) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
        let (client, mut conn) = self
            .client_config(t)
            .connect(NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect through perseus: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = futures::StreamExt::next(&mut messages).await {
                let _ = tx.send(m);
            }
        });
        (client, rx)
    }

    /// A libpq program (`psql`, `pgbench`) aimed at perseus as tenant `t`, every PG*
    /// variable of the test environment replaced.
    pub fn libpq_cmd(&self, program: &str, t: &TenantSpec) -> Command {
        libpq_cmd(
            program,
            self.perseus.port(),
            &t.source_user,
            &t.password,
            &t.source_db,
            &tenant_options(t),
        )
    }

    /// A libpq program aimed straight at the destination database as its owner role, with
    /// `schema` as search_path (pgbench -i, checks).
    pub fn dest_cmd(&self, program: &str, schema: &str) -> Command {
        libpq_cmd(
            program,
            self.pg.port(),
            &self.role,
            &self.role_password,
            &self.dest_db,
            &options_for(schema),
        )
    }

    /// The destination role's backends other than the caller's own: (pid, state, query).
    pub async fn server_backends(&self, observer: &Client) -> Vec<(i32, String, String)> {
        observer
            .query(
                "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity \
                 WHERE usename = $1 AND datname = $2 AND pid <> pg_backend_pid()",
                &[&self.role, &self.dest_db],
            )
            .await
            .expect("read pg_stat_activity")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// The destination role's backends that are inside a transaction (idle in one, aborted,
    /// or running a statement), other than the caller's own: (pid, state, query).
    pub async fn backends_in_transaction(&self, observer: &Client) -> Vec<(i32, String, String)> {
        observer
            .query(
                "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity \
                 WHERE usename = $1 AND datname = $2 AND pid <> pg_backend_pid() \
                 AND (xact_start IS NOT NULL OR state LIKE 'idle in transaction%')",
                &[&self.role, &self.dest_db],
            )
            .await
            .expect("read pg_stat_activity")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// Waits until no backend of the destination role is in a transaction; panics with
    /// what is left after [`SETTLE`].
    pub async fn wait_no_open_transactions(&self, observer: &Client) {
        let left = poll_async(SETTLE, Duration::from_millis(50), || async {
            self.backends_in_transaction(observer)
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        if left.is_none() {
            panic!(
                "backends still in a transaction after {SETTLE:?}: {:?}\nperseus log:\n{}",
                self.backends_in_transaction(observer).await,
                super::log_tail(&self.perseus.log_path(), 40)
            );
        }
    }

    /// Waits until the destination role has no backends left (those of clients that just
    /// disconnected take a moment to exit); panics with what is left after [`SETTLE`].
    pub async fn wait_no_backends(&self, observer: &Client) {
        let gone = poll_async(SETTLE, Duration::from_millis(20), || async {
            self.server_backends(observer)
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "the destination role still has backends: {:?}",
            self.server_backends(observer).await
        );
    }

    /// Waits until some backend of the destination role is in state `state` running a query
    /// that contains `marker`; panics with what there is after [`SETTLE`].
    pub async fn wait_backend(&self, observer: &Client, state: &str, marker: &str) {
        let found = poll_async(SETTLE, Duration::from_millis(20), || async {
            self.server_backends(observer)
                .await
                .into_iter()
                .any(|(_, s, q)| s == state && q.contains(marker))
                .then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "no backend is {state:?} with a query containing {marker:?}: {:?}\nperseus log:\n{}",
            self.server_backends(observer).await,
            super::log_tail(&self.perseus.log_path(), 40)
        );
    }

    /// Counts rows of `table` in each schema named (quoted as needed), bypassing perseus.
    pub async fn count_per_schema(
        &self,
        observer: &Client,
        schemas: &[&str],
        table: &str,
    ) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        for schema in schemas {
            let sql = format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(schema),
                quote_ident(table)
            );
            let n: i64 = observer
                .query_one(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0);
            out.insert((*schema).to_owned(), n);
        }
        out
    }
}

/// Samples how many server connections the destination role has, until stopped.
pub struct BackendWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(i64, Vec<String>)>,
}

impl BackendWatch {
    /// Stops sampling and returns the most server connections seen at once, with what
    /// pg_stat_activity showed of them at that moment (for failure messages).
    pub async fn max(self) -> (i64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("backend watcher")
    }
}

impl Env {
    /// Starts sampling the destination role's backends every few milliseconds.
    pub async fn watch_backends(&self) -> BackendWatch {
        let observer = self.dest_super().await;
        let (db, role) = (self.dest_db.clone(), self.role.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = (0, Vec::new());
            // Bounded: at ~5 ms a sample this covers minutes, far beyond any test here.
            for _ in 0..100_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let rows = observer
                    .query(
                        "SELECT format('pid %s %s since %s: %s', pid, state, \
                         backend_start, left(query, 60)) \
                         FROM pg_stat_activity WHERE usename = $1 AND datname = $2",
                        &[&role, &db],
                    )
                    .await
                    .expect("read the role's backends");
                if rows.len() as i64 > max.0 {
                    max = (rows.len() as i64, rows.iter().map(|r| r.get(0)).collect());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max
        });
        BackendWatch { stop, task }
    }
}

/// A libpq program with only the connection variables we set.
pub fn libpq_cmd(
    program: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    options: &str,
) -> Command {
    let mut cmd = Command::new(bindir().join(program));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", db)
        .env("PGOPTIONS", options)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "20")
        .stdin(Stdio::null());
    cmd
}

/// The rows of a simple-query response, as text.
pub fn simple_rows(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message of a server error, or a panic saying what came instead.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
        None => panic!("expected an ErrorResponse, got {e:?}"),
    }
}
