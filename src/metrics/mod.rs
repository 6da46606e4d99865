//! Prometheus metrics and the `/health` endpoint: the Go daemon's per-pool series under the same
//! names, plus session, auth, KMS and process metrics, served over HTTP on `MetricsAddress`.
//!
//! [`Metrics`] holds the instruments the daemon updates as things happen (cheap atomic
//! increments); per-pool and process values are read at scrape time instead, so the hot path
//! pays nothing for them.

pub mod health;
pub mod http;
pub mod pools;
pub mod process;
pub mod source;

use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use pools::PoolSample;
pub use source::Source;

/// Why a login ended the way it did; the `result` label of `perseus_auth_results_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthResult {
    Ok,
    WrongPassword,
    UnknownTenant,
    UserMismatch,
    /// The auth DB could not be asked and no cached row existed.
    Unavailable,
    /// The stored hash is malformed or out of bounds.
    BadHash,
}

impl AuthResult {
    /// Every result, in declaration order: `ALL[r as usize] == r`.
    pub const ALL: [AuthResult; 6] = [
        AuthResult::Ok,
        AuthResult::WrongPassword,
        AuthResult::UnknownTenant,
        AuthResult::UserMismatch,
        AuthResult::Unavailable,
        AuthResult::BadHash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::WrongPassword => "wrong_password",
            AuthResult::UnknownTenant => "unknown_tenant",
            AuthResult::UserMismatch => "user_mismatch",
            AuthResult::Unavailable => "unavailable",
            AuthResult::BadHash => "bad_hash",
        }
    }
}

impl EncodeLabelSet for AuthResult {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("result", self.as_str())].encode(encoder)
    }
}

/// Upper bounds (seconds) for waits on a server connection: sub-millisecond when a connection
/// is idle, up to the wait timeout when the pool is exhausted.
const CHECKOUT_BUCKETS: [f64; 13] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];
/// Upper bounds (seconds) for one `perseus_auth` lookup.
const AUTH_DB_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The daemon's instruments. Share it as `Arc<Metrics>`; every hook is a few atomic operations.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    clients_active: Gauge,
    clients_waiting: Gauge,
    clients_pinned: Gauge,
    transactions: Counter,
    queries: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    checkout_wait: Histogram,
    auth_results: Family<AuthResult, Counter>,
    /// The family's counters by [`AuthResult`] (shared with it): a login counts itself
    /// without a label lookup.
    auth_counters: [Counter; AuthResult::ALL.len()],
    kms_decrypts: Counter,
    kms_errors: Counter,
    auth_db_query: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        // Every result from the start, so a rate() over a fresh daemon is 0 rather than absent.
        let auth_results = Family::<AuthResult, Counter>::default();
        let auth_counters = AuthResult::ALL.map(|r| auth_results.get_or_create(&r).clone());
        let mut m = Metrics {
            clients_active: Gauge::default(),
            clients_waiting: Gauge::default(),
            clients_pinned: Gauge::default(),
            transactions: Counter::default(),
            queries: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            checkout_wait: Histogram::new(CHECKOUT_BUCKETS),
            auth_results,
            auth_counters,
            kms_decrypts: Counter::default(),
            kms_errors: Counter::default(),
            auth_db_query: Histogram::new(AUTH_DB_BUCKETS),
            registry: Registry::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            "perseus_build",
            "Version and build of the running daemon",
            Info::new(health::BuildInfo::current().labels()),
        );
        registry.register(
            "perseus_client_connections_active",
            "Client sessions currently connected",
            m.clients_active.clone(),
        );
        registry.register(
            "perseus_client_connections_waiting",
            "Client sessions currently waiting for a server connection",
            m.clients_waiting.clone(),
        );
        registry.register(
            "perseus_client_connections_pinned",
            "Client sessions pinned to their server connection (session state that cannot move)",
            m.clients_pinned.clone(),
        );
        // Counter names are given without `_total`: the encoder appends it.
        registry.register(
            "perseus_transactions",
            "Transactions (server connection checkouts) served",
            m.transactions.clone(),
        );
        registry.register(
            "perseus_queries",
            "Queries (Query and Sync messages) forwarded from clients",
            m.queries.clone(),
        );
        registry.register(
            "perseus_client_received_bytes",
            "Bytes received from clients",
            m.bytes_received.clone(),
        );
        registry.register(
            "perseus_client_sent_bytes",
            "Bytes sent to clients",
            m.bytes_sent.clone(),
        );
        registry.register(
            "perseus_checkout_wait_seconds",
            "Time a session waited for a server connection",
            m.checkout_wait.clone(),
        );
        registry.register(
            "perseus_auth_results",
            "Client logins by outcome",
            m.auth_results.clone(),
        );
        registry.register(
            "perseus_kms_decrypts",
            "Destination passwords decrypted with KMS",
            m.kms_decrypts.clone(),
        );
        registry.register(
            "perseus_kms_decrypt_errors",
            "KMS decrypt calls that failed",
            m.kms_errors.clone(),
        );
        registry.register(
            "perseus_auth_db_query_duration_seconds",
            "Latency of perseus_auth lookups against the auth database",
            m.auth_db_query.clone(),
        );
        m
    }

    /// A client session began; the gauge drops again when the guard does.
    pub fn client_connected(&self) -> GaugeGuard {
        GaugeGuard::new(&self.clients_active)
    }

    /// A session started waiting for a server connection; drop the guard when it has one.
    pub fn waiting_for_server(&self) -> GaugeGuard {
        GaugeGuard::new(&self.clients_waiting)
    }

    /// A session became pinned to its server connection; the gauge drops when the guard does.
    pub fn client_pinned(&self) -> GaugeGuard {
        GaugeGuard::new(&self.clients_pinned)
    }

    pub fn transaction(&self) {
        self.transactions.inc();
    }

    /// Queries, Syncs and function calls forwarded in one checkout.
    pub fn queries(&self, n: u64) {
        self.queries.inc_by(n);
    }

    pub fn bytes_in(&self, n: usize) {
        self.bytes_received.inc_by(n as u64);
    }

    pub fn bytes_out(&self, n: usize) {
        self.bytes_sent.inc_by(n as u64);
    }

    pub fn checkout_wait(&self, waited: Duration) {
        self.checkout_wait.observe(waited.as_secs_f64());
    }

    pub fn auth_result(&self, result: AuthResult) {
        self.auth_counters[result as usize].inc();
    }

    /// One KMS Decrypt call finished, successfully or not.
    pub fn kms_decrypt(&self, ok: bool) {
        self.kms_decrypts.inc();
        if !ok {
            self.kms_errors.inc();
        }
    }

    /// One query against the auth DB took `took` (successful or not).
    pub fn auth_db_query(&self, took: Duration) {
        self.auth_db_query.observe(took.as_secs_f64());
    }

    /// The whole exposition in OpenMetrics text: these instruments, then the per-pool series
    /// from `pools`, then process metrics read now.
    pub fn render(&self, pools: Vec<PoolSample>) -> Result<String, std::fmt::Error> {
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(pools::PoolCollector::new(pools)));
        scrape.register_collector(Box::new(process::ProcessCollector));
        let mut out = String::with_capacity(8 * 1024);
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &scrape)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Holds a gauge up by one for as long as it lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(g: &Gauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    /// The counters kept by result index are the family's own, each under its label.
    #[test]
    fn each_auth_result_counts_under_its_own_label() {
        let m = Metrics::new();
        for (i, r) in AuthResult::ALL.into_iter().enumerate() {
            assert_eq!(AuthResult::ALL[r as usize], r);
            for _ in 0..=i {
                m.auth_result(r);
            }
        }
        let text = m.render(Vec::new()).unwrap();
        for (i, r) in AuthResult::ALL.into_iter().enumerate() {
            let prefix = format!("perseus_auth_results_total{{result=\"{}\"}} ", r.as_str());
            let l = line(&text, &prefix).unwrap_or_else(|| panic!("no {prefix}in\n{text}"));
            assert_eq!(l[prefix.len()..], (i + 1).to_string(), "{l}");
        }
    }

    #[test]
    fn hooks_show_up_under_their_names() {
        let m = Metrics::new();
        let g1 = m.client_connected();
        let g2 = m.client_connected();
        let w = m.waiting_for_server();
        drop(g1);
        m.transaction();
        m.queries(1);
        m.queries(1);
        m.bytes_in(10);
        m.bytes_out(25);
        m.checkout_wait(Duration::from_millis(3));
        m.auth_result(AuthResult::Ok);
        m.auth_result(AuthResult::WrongPassword);
        m.auth_result(AuthResult::WrongPassword);
        m.kms_decrypt(true);
        m.kms_decrypt(false);
        m.auth_db_query(Duration::from_millis(2));
        let text = m.render(Vec::new()).unwrap();
        for (prefix, want) in [
            ("perseus_client_connections_active ", "1"),
            ("perseus_client_connections_waiting ", "1"),
            ("perseus_transactions_total ", "1"),
            ("perseus_queries_total ", "2"),
            ("perseus_client_received_bytes_total ", "10"),
            ("perseus_client_sent_bytes_total ", "25"),
            ("perseus_checkout_wait_seconds_count ", "1"),
            ("perseus_checkout_wait_seconds_bucket{le=\"0.005\"} ", "1"),
            ("perseus_checkout_wait_seconds_bucket{le=\"0.0025\"} ", "0"),
            ("perseus_auth_results_total{result=\"ok\"} ", "1"),
            (
                "perseus_auth_results_total{result=\"wrong_password\"} ",
                "2",
            ),
            ("perseus_auth_results_total{result=\"bad_hash\"} ", "0"),
            ("perseus_kms_decrypts_total ", "2"),
            ("perseus_kms_decrypt_errors_total ", "1"),
            ("perseus_auth_db_query_duration_seconds_count ", "1"),
        ] {
            let l = line(&text, prefix).unwrap_or_else(|| panic!("no {prefix}in\n{text}"));
            assert_eq!(&l[prefix.len()..], want, "{l}");
        }
        assert!(text.contains("perseus_build_info{"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("_total_total"), "{text}");
        drop((g2, w));
        let text = m.render(Vec::new()).unwrap();
        assert_eq!(
            line(&text, "perseus_client_connections_active "),
            Some("perseus_client_connections_active 0")
        );
        assert_eq!(
            line(&text, "perseus_client_connections_waiting "),
            Some("perseus_client_connections_waiting 0")
        );
    }
}
