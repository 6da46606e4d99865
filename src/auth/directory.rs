//! The tenant directory: `perseus_auth` rows by (source_db, source_schema), cached with a TTL so
//! an auth-DB outage does not lock out tenants already seen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};

use crate::metrics::Metrics;
use crate::pool::{BadDestHost, DestKey};

/// One `perseus_auth` row, minus the id, with its destination columns already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub source_user: String,
    pub source_pass_hashed: String,
    pub dest_pass_enc: String,
    /// The pool key of `dest_host`, `dest_db` and `dest_user`, parsed once when the row is
    /// read: every login of the tenant routes by it while the row is cached.
    pub dest: Result<DestKey, BadDestHost>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("no tenant for this database and schema")]
    NotFound,
    #[error("auth database unavailable: {0}")]
    Unavailable(String),
}

const QUERY: &str = "SELECT source_user, source_pass_hashed, dest_host, dest_db, dest_user, \
                     dest_pass_enc FROM perseus_auth WHERE source_db = $1 AND source_schema = $2";

/// (source_db, source_schema), shared with the login that asked.
type TenantKey = (Arc<str>, Arc<str>);

pub struct Directory {
    metrics: Arc<Metrics>,
    pool: deadpool_postgres::Pool,
    query_timeout: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<TenantKey, (Arc<TenantRow>, Instant)>>,
}

impl Directory {
    pub fn new(
        pool: deadpool_postgres::Pool,
        query_timeout: Duration,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Directory {
            metrics,
            pool,
            query_timeout,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &TenantKey) -> Option<(Arc<TenantRow>, Instant)> {
        self.cache
            .lock()
            .expect("directory cache")
            .get(key)
            .cloned()
    }

    /// Looks a tenant up: a fresh cached row, else the auth DB, else (when that fails) a stale row.
    pub async fn lookup(
        &self,
        db: &Arc<str>,
        schema: &Arc<str>,
    ) -> Result<Arc<TenantRow>, DirectoryError> {
        let key = (db.clone(), schema.clone());
        let cached = self.cached(&key);
        if let Some((row, at)) = &cached
            && at.elapsed() < self.ttl
        {
            return Ok(row.clone());
        }
        let started = Instant::now();
        let res = tokio::time::timeout(self.query_timeout, self.query(db, schema)).await;
        self.metrics.auth_db_query(started.elapsed());
        match res {
            Ok(Ok(Some(row))) => {
                let row = Arc::new(row);
                self.cache
                    .lock()
                    .expect("directory cache")
                    .insert(key, (row.clone(), Instant::now()));
                Ok(row)
            }
            Ok(Ok(None)) => {
                self.cache.lock().expect("directory cache").remove(&key);
                Err(DirectoryError::NotFound)
            }
            Ok(Err(e)) => self.stale(cached, db, schema, e),
            Err(_) => self.stale(
                cached,
                db,
                schema,
                format!("query timed out after {:?}", self.query_timeout),
            ),
        }
    }

    fn stale(
        &self,
        cached: Option<(Arc<TenantRow>, Instant)>,
        db: &str,
        schema: &str,
        why: String,
    ) -> Result<Arc<TenantRow>, DirectoryError> {
        match cached {
            Some((row, at)) => {
                tracing::warn!(db, schema, age = ?at.elapsed(), reason = %why,
                    "auth database unavailable; using stale tenant row");
                Ok(row)
            }
            None => Err(DirectoryError::Unavailable(why)),
        }
    }

    async fn query(&self, db: &str, schema: &str) -> Result<Option<TenantRow>, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client
            .prepare_cached(QUERY)
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_opt(&stmt, &[&db, &schema])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.map(|r| TenantRow {
            source_user: r.get(0),
            source_pass_hashed: r.get(1),
            dest: DestKey::from_row(r.get(2), r.get(3), r.get(4)),
            dest_pass_enc: r.get(5),
        }))
    }

    /// Whether the auth DB answers right now (for /health).
    pub async fn ping(&self) -> bool {
        let fut = async {
            let c = self.pool.get().await.ok()?;
            c.simple_query("SELECT 1").await.ok()
        };
        matches!(
            tokio::time::timeout(self.query_timeout, fut).await,
            Ok(Some(_))
        )
    }
}
