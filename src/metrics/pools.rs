//! Per-pool series read from the live pools at scrape time, under the Go daemon's names and its
//! `dest_host`/`dest_db` labels, so existing dashboards and alerts keep working.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::pool::DestPool;
use crate::pool::stats::PoolStats;

/// One pool's numbers at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSample {
    pub dest_host: String,
    pub dest_db: String,
    pub max_open: u64,
    pub open: u64,
    pub idle: u64,
    pub in_use: u64,
    pub waiting: u64,
    pub wait_count: u64,
    pub wait_seconds: f64,
    pub max_idle_closed: u64,
    pub max_idle_time_closed: u64,
    pub max_lifetime_closed: u64,
    pub checkouts: u64,
    pub checkout_errors: u64,
    pub search_path_sets: u64,
    pub param_sets: u64,
    pub affinity_hits: u64,
}

impl PoolSample {
    pub fn of(pool: &DestPool) -> PoolSample {
        let status = pool.status();
        let s = &pool.stats;
        let get = PoolStats::get;
        PoolSample {
            dest_host: pool.labels.0.clone(),
            dest_db: pool.labels.1.clone(),
            max_open: status.max_open as u64,
            open: status.open as u64,
            idle: status.idle as u64,
            in_use: status.in_use as u64,
            waiting: status.waiting as u64,
            wait_count: get(&s.wait_count),
            wait_seconds: get(&s.wait_nanos) as f64 / 1e9,
            max_idle_closed: get(&s.max_idle_closed),
            max_idle_time_closed: get(&s.max_idle_time_closed),
            max_lifetime_closed: get(&s.max_lifetime_closed),
            checkouts: get(&s.checkouts),
            checkout_errors: get(&s.checkout_errors),
            search_path_sets: get(&s.search_path_sets),
            param_sets: get(&s.param_sets),
            affinity_hits: get(&s.affinity_hits),
        }
    }

    fn add(&mut self, o: &PoolSample) {
        self.max_open += o.max_open;
        self.open += o.open;
        self.idle += o.idle;
        self.in_use += o.in_use;
        self.waiting += o.waiting;
        self.wait_count += o.wait_count;
        self.wait_seconds += o.wait_seconds;
        self.max_idle_closed += o.max_idle_closed;
        self.max_idle_time_closed += o.max_idle_time_closed;
        self.max_lifetime_closed += o.max_lifetime_closed;
        self.checkouts += o.checkouts;
        self.checkout_errors += o.checkout_errors;
        self.search_path_sets += o.search_path_sets;
        self.param_sets += o.param_sets;
        self.affinity_hits += o.affinity_hits;
    }
}

/// Pools that share `dest_host`/`dest_db` (different `dest_user`s) are summed: the labels are
/// the Go daemon's, and an exposition must not repeat a label set.
fn merge(samples: Vec<PoolSample>) -> Vec<PoolSample> {
    let mut out: Vec<PoolSample> = Vec::with_capacity(samples.len());
    for s in samples {
        match out
            .iter_mut()
            .find(|o| o.dest_host == s.dest_host && o.dest_db == s.dest_db)
        {
            Some(o) => o.add(&s),
            None => out.push(s),
        }
    }
    out.sort_by(|a, b| (&a.dest_host, &a.dest_db).cmp(&(&b.dest_host, &b.dest_db)));
    out
}

#[derive(Debug)]
pub struct PoolCollector {
    samples: Vec<PoolSample>,
}

impl PoolCollector {
    pub fn new(samples: Vec<PoolSample>) -> PoolCollector {
        PoolCollector {
            samples: merge(samples),
        }
    }
}

type Gauge = fn(&PoolSample) -> u64;
type CounterU = fn(&PoolSample) -> u64;

/// Name, help and value of each gauge; names are exactly the Go daemon's.
const GAUGES: [(&str, &str, Gauge); 5] = [
    (
        "perseus_max_open_connections",
        "MaxOpen of the pool: the most server connections it may hold.",
        |s| s.max_open,
    ),
    (
        "perseus_open_connections",
        "Server connections open now, busy or idle.",
        |s| s.open,
    ),
    (
        "perseus_in_use_connections",
        "Server connections serving a transaction now.",
        |s| s.in_use,
    ),
    (
        "perseus_idle_connections",
        "Server connections idle in the pool now.",
        |s| s.idle,
    ),
    (
        "perseus_waiting_clients",
        "Sessions queued for a connection of this pool right now.",
        |s| s.waiting,
    ),
];

/// Counters; the encoder appends `_total`, so these names lack it.
const COUNTERS: [(&str, &str, CounterU); 9] = [
    (
        "perseus_wait_count",
        "Checkouts that had to wait because every connection was busy.",
        |s| s.wait_count,
    ),
    (
        "perseus_max_idle_closed",
        "Connections closed because MaxIdle idle connections were already pooled.",
        |s| s.max_idle_closed,
    ),
    (
        "perseus_max_idle_time_closed",
        "Connections closed after idling longer than MaxIdletimeSecs.",
        |s| s.max_idle_time_closed,
    ),
    (
        "perseus_max_lifetime_closed",
        "Connections closed after living longer than MaxLifetimeSecs.",
        |s| s.max_lifetime_closed,
    ),
    (
        "perseus_checkouts",
        "Server connections handed to sessions.",
        |s| s.checkouts,
    ),
    (
        "perseus_checkout_errors",
        "Checkouts that failed (wait timeout, connect error, closed pool).",
        |s| s.checkout_errors,
    ),
    (
        "perseus_search_path_sets",
        "SET search_path statements run to switch a connection to a tenant's schema.",
        |s| s.search_path_sets,
    ),
    (
        "perseus_schema_affinity_hits",
        "Checkouts that got a connection already on the tenant's schema (no SET needed).",
        |s| s.affinity_hits,
    ),
    (
        "perseus_param_sets",
        "SET statements run to apply a client's startup parameters.",
        |s| s.param_sets,
    ),
];

impl PoolCollector {
    fn labels(s: &PoolSample) -> [(&'static str, &str); 2] {
        [("dest_host", &s.dest_host), ("dest_db", &s.dest_db)]
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in GAUGES {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &self.samples {
                let labels = Self::labels(s);
                ConstGauge::new(value(s) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in COUNTERS {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &self.samples {
                let labels = Self::labels(s);
                ConstCounter::new(value(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "perseus_wait_duration_seconds",
            "Seconds spent in checkouts that had to wait.",
            None,
            MetricType::Counter,
        )?;
        for s in &self.samples {
            let labels = Self::labels(s);
            ConstCounter::new(s.wait_seconds).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode_registry;
    use prometheus_client::registry::Registry;

    fn sample(host: &str, db: &str) -> PoolSample {
        PoolSample {
            dest_host: host.into(),
            dest_db: db.into(),
            max_open: 10,
            open: 3,
            idle: 1,
            in_use: 2,
            waiting: 0,
            wait_count: 4,
            wait_seconds: 1.5,
            max_idle_closed: 5,
            max_idle_time_closed: 6,
            max_lifetime_closed: 7,
            checkouts: 8,
            checkout_errors: 0,
            search_path_sets: 9,
            param_sets: 1,
            affinity_hits: 11,
        }
    }

    fn render(samples: Vec<PoolSample>) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(PoolCollector::new(samples)));
        let mut out = String::new();
        encode_registry(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn go_names_and_labels() {
        let text = render(vec![sample("db.example:5432", "app")]);
        let l = r#"{dest_host="db.example:5432",dest_db="app"}"#;
        for want in [
            format!("perseus_max_open_connections{l} 10"),
            format!("perseus_open_connections{l} 3"),
            format!("perseus_in_use_connections{l} 2"),
            format!("perseus_idle_connections{l} 1"),
            format!("perseus_wait_count_total{l} 4"),
            format!("perseus_wait_duration_seconds_total{l} 1.5"),
            format!("perseus_max_idle_closed_total{l} 5"),
            format!("perseus_max_idle_time_closed_total{l} 6"),
            format!("perseus_max_lifetime_closed_total{l} 7"),
            format!("perseus_search_path_sets_total{l} 9"),
            format!("perseus_schema_affinity_hits_total{l} 11"),
        ] {
            assert!(text.lines().any(|x| x == want), "missing {want} in\n{text}");
        }
        assert!(text.contains("# TYPE perseus_open_connections gauge"));
        assert!(text.contains("# TYPE perseus_wait_count counter"));
        assert!(!text.contains("_total_total"));
    }

    #[test]
    fn pools_with_the_same_labels_are_summed_once() {
        let text = render(vec![
            sample("h", "d"),
            sample("h", "d"),
            sample("h", "other"),
        ]);
        let open: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("perseus_open_connections{"))
            .collect();
        assert_eq!(
            open,
            [
                r#"perseus_open_connections{dest_host="h",dest_db="d"} 6"#,
                r#"perseus_open_connections{dest_host="h",dest_db="other"} 3"#,
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(vec![sample("h", "we\"ird\\db\nx")]);
        assert!(
            text.contains(r#"perseus_open_connections{dest_host="h",dest_db="we\"ird\\db\nx"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn no_pools_still_describes_the_families() {
        let text = render(Vec::new());
        assert!(text.contains("# TYPE perseus_open_connections gauge"));
        assert!(!text.lines().any(|l| l.starts_with("perseus_")));
    }
}
