//! Schema migrations for the auth DB (`perseus --migrate`): the SQL ships inside the binary.
//!
//! Each migration is idempotent, so there is no bookkeeping table: a database the Go Perseus
//! set up is left as it is, and running twice is harmless.

use std::time::Duration;

use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Socket};

/// One migration: a name for logs and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// All migrations, in the order they are applied.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "001_perseus_auth",
    sql: include_str!("../migrations/001_perseus_auth.sql"),
}];

/// Serialises concurrent `--migrate` runs (two `CREATE TABLE IF NOT EXISTS` can race);
/// the value is arbitrary but fixed ("perseus" in ASCII).
const LOCK_KEY: i64 = 0x0070_6572_7365_7573;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the auth DB: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("connecting to the auth DB took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("migration {name} failed: {source}")]
    Apply {
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Applies every migration on `client`. Each runs as one implicit transaction (a multi-statement
/// simple query), holding an advisory lock for its duration. Returns the names applied.
pub async fn apply(client: &Client) -> Result<Vec<&'static str>, MigrateError> {
    let mut applied = Vec::with_capacity(MIGRATIONS.len());
    for m in MIGRATIONS {
        let batch = format!("SELECT pg_advisory_xact_lock({LOCK_KEY});\n{}", m.sql);
        client
            .batch_execute(&batch)
            .await
            .map_err(|source| MigrateError::Apply {
                name: m.name,
                source,
            })?;
        applied.push(m.name);
    }
    Ok(applied)
}

/// Connects with `config` (as produced by `AuthDbSettings::parse_dsn`), applies the migrations,
/// and closes the connection.
pub async fn apply_with_config<T>(
    config: &tokio_postgres::Config,
    tls: T,
    connect_timeout: Duration,
) -> Result<Vec<&'static str>, MigrateError>
where
    T: MakeTlsConnect<Socket> + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = tokio::time::timeout(connect_timeout, config.connect(tls))
        .await
        .map_err(|_| MigrateError::ConnectTimeout(connect_timeout))?
        .map_err(MigrateError::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "auth DB connection closed with an error during migration");
        }
    });
    let result = apply(&client).await;
    drop(client);
    let _ = driver.await;
    result
}
