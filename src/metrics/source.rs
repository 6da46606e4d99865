//! Where the endpoint gets its numbers: the daemon's shared state in production, a stand-in in
//! tests, so the HTTP side can be exercised without pools or an auth DB.

use std::future::Future;

use super::{Metrics, PoolSample};

pub trait Source: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// One sample per live pool, taken now.
    fn pool_samples(&self) -> Vec<PoolSample>;
    /// Whether the auth DB answers a trivial query within its query timeout.
    fn auth_db_reachable(&self) -> impl Future<Output = bool> + Send;
}

impl Source for crate::session::Shared {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn pool_samples(&self) -> Vec<PoolSample> {
        self.registry
            .pools()
            .iter()
            .map(|p| PoolSample::of(p))
            .collect()
    }

    async fn auth_db_reachable(&self) -> bool {
        self.directory.ping().await
    }
}
