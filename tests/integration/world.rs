//! A tenant world for outage tests, where the auth DB, the destination and the KMS may each be
//! a fixture of its own (so one can be stopped while the others keep running), plus a switchable
//! TCP relay that makes a service vanish and come back on the same address.
//!
//! Used by the resilience tests as `crate::world`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perseus::config::{AwsSettings, Config};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

pub use crate::support::datapath::client_config;
use crate::support::tenant::{add_tenant, apply_migrations, create_schema};
use crate::support::{Moto, PgCluster, TenantSpec, quote_ident, unique_name};

pub const DEST_PASSWORD: &str = "dest-secret";

/// One destination: a database owned by its own role on some cluster.
#[derive(Clone, Debug)]
pub struct Dest {
    pub host_port: String,
    pub db: String,
    pub role: String,
}

pub struct World<'a> {
    pub auth: &'a PgCluster,
    pub auth_db: String,
    /// What perseus_auth rows are encrypted with (a moto key).
    pub aws: AwsSettings,
    pub moto: &'a Moto,
    pub tenants: Vec<TenantSpec>,
}

impl<'a> World<'a> {
    /// An auth database (with perseus_auth) on `auth`, rows encrypted by `moto`.
    pub async fn new(auth: &'a PgCluster, moto: &'a Moto) -> World<'a> {
        let auth_db = unique_name("auth");
        auth.create_database(&auth_db);
        apply_migrations(&auth.connect(&auth_db).await).await;
        World {
            auth,
            auth_db,
            aws: moto.aws_settings(),
            moto,
            tenants: Vec::new(),
        }
    }

    /// A new destination database and owner role on `pg`.
    pub fn dest(&self, pg: &PgCluster) -> Dest {
        let db = unique_name("dest");
        let role = unique_name("app");
        pg.create_role(&role, DEST_PASSWORD);
        pg.create_database_owned_by(&db, &role);
        Dest {
            host_port: pg.host_port(),
            db,
            role,
        }
    }

    /// Adds tenant `schema` routed to `dest` on `pg`: a schema holding `t(v) = value` and a
    /// perseus_auth row. Returns its spec (user `u_<schema>`, password `pw-<schema>`).
    pub async fn tenant(
        &mut self,
        pg: &PgCluster,
        dest: &Dest,
        schema: &str,
        value: i32,
    ) -> TenantSpec {
        let client = pg
            .connect_as(&dest.db, &dest.role, DEST_PASSWORD)
            .await
            .expect("connect to the destination as its owner");
        create_schema(&client, schema).await;
        client
            .batch_execute(&format!(
                "CREATE TABLE {s}.t (v int); INSERT INTO {s}.t VALUES ({value});",
                s = quote_ident(schema)
            ))
            .await
            .expect("create the tenant table");
        let spec = TenantSpec {
            source_db: "mm".into(),
            source_schema: schema.into(),
            source_user: format!("u_{schema}"),
            password: format!("pw-{schema}"),
            dest_host: dest.host_port.clone(),
            dest_db: dest.db.clone(),
            dest_user: dest.role.clone(),
            dest_password: DEST_PASSWORD.into(),
        };
        add_tenant(&self.auth.connect(&self.auth_db).await, &self.aws, &spec).await;
        self.tenants.push(spec.clone());
        spec
    }

    /// A daemon config for this world (auth DB and KMS as given).
    pub fn config(&self) -> Config {
        crate::support::perseus::config(self.auth, &self.auth_db, self.moto)
    }
}

/// Connects through perseus; the error is returned for the test to look at.
pub async fn connect(
    port: u16,
    t: &TenantSpec,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = client_config(port, t).connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Logs in as `t` and reads its `t.v`, bounded by `limit`: Ok(v), or the error as text.
pub async fn login_and_read(port: u16, t: &TenantSpec, limit: Duration) -> Result<i32, String> {
    let attempt = async {
        let c = connect(port, t).await.map_err(describe)?;
        let row = c
            .query_one("SELECT v FROM t", &[])
            .await
            .map_err(describe)?;
        Ok(row.get::<_, i32>(0))
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("HUNG: no answer within {limit:?}")),
    }
}

/// `SQLSTATE: message` of a server error, else the error's text.
pub fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

type Pipes = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// A TCP relay on a fixed loopback port in front of `target`. While down, nothing listens on
/// its port (connection refused) and relayed connections are cut, as when a service dies; up
/// again, it listens on the same port.
pub struct Relay {
    port: u16,
    target: SocketAddr,
    /// While up: the accept loop and the relayed connections, to cut them all on `down`.
    state: Mutex<Option<(JoinHandle<()>, Pipes)>>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        // The free port may be taken by someone else before we bind it.
        for _ in 0..5 {
            let port = crate::support::free_port();
            let relay = Relay {
                port,
                target,
                state: Mutex::new(None),
            };
            if relay.try_up().is_ok() {
                return relay;
            }
        }
        panic!("no free port for the relay");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn listener(&self) -> std::io::Result<TcpListener> {
        let socket = TcpSocket::new_v4()?;
        // Relayed connections we closed sit in TIME_WAIT on this port; rebinding needs this.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], self.port)))?;
        socket.listen(128)
    }

    fn try_up(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.is_some() {
            return Ok(());
        }
        let listener = self.listener()?;
        let conns: Pipes = Arc::default();
        let (target, tracked) = (self.target, conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let pipe = tokio::spawn(pipe(client, target));
                tracked.lock().unwrap().push(pipe);
            }
        });
        *state = Some((accept, conns));
        Ok(())
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        self.try_up()
            .unwrap_or_else(|e| panic!("relay cannot listen on {} again: {e}", self.port));
    }

    /// Stops listening and cuts every relayed connection.
    pub fn down(&self) {
        if let Some((accept, conns)) = self.state.lock().unwrap().take() {
            accept.abort();
            for c in conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

async fn pipe(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
