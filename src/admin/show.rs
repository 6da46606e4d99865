//! The SHOW commands: snapshots of pools, clients, tenants and configuration as tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::clock::utc;
use super::command::Show;
use super::resultset::Table;
use crate::pool::DestPool;
use crate::pool::stats::PoolStats;
use crate::session::Shared;
use crate::session::registry::Phase;

pub fn show(what: Show, shared: &Shared) -> Table {
    match what {
        Show::Pools => pools(shared),
        Show::Clients => clients(shared),
        Show::Servers => servers(shared),
        Show::Tenants => tenants(shared),
        Show::Stats => stats(shared),
        Show::Config => config(shared),
        Show::Version => {
            let mut t = Table::new(&["version"]);
            t.push([super::version()]);
            t
        }
    }
}

/// Live pools in a stable order.
fn sorted_pools(shared: &Shared) -> Vec<Arc<DestPool>> {
    let mut pools = shared.registry.pools();
    pools.sort_by(|a, b| a.key.cmp(&b.key));
    pools
}

fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "dest_host",
        "dest_db",
        "dest_user",
        "max_open",
        "open",
        "in_use",
        "idle",
        "waiting",
        "wait_count",
        "search_path_sets",
    ]);
    for p in sorted_pools(shared) {
        let s = p.status();
        t.push([
            p.labels.0.clone(),
            p.labels.1.clone(),
            p.key.user.clone(),
            s.max_open.to_string(),
            s.open.to_string(),
            s.in_use.to_string(),
            s.idle.to_string(),
            s.waiting.to_string(),
            PoolStats::get(&p.stats.wait_count).to_string(),
            PoolStats::get(&p.stats.search_path_sets).to_string(),
        ]);
    }
    t
}

/// Server connections per pool: the pool hands them out anonymously, so they are counted,
/// not listed one by one.
fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "dest_host",
        "dest_db",
        "dest_user",
        "dest_port",
        "open",
        "in_use",
        "idle",
        "max_open",
        "max_idle",
    ]);
    for p in sorted_pools(shared) {
        let s = p.status();
        t.push([
            p.labels.0.clone(),
            p.labels.1.clone(),
            p.key.user.clone(),
            p.key.port.to_string(),
            s.open.to_string(),
            s.in_use.to_string(),
            s.idle.to_string(),
            s.max_open.to_string(),
            p.settings().max_idle.to_string(),
        ]);
    }
    t
}

fn stats(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "dest_host",
        "dest_db",
        "checkouts",
        "checkout_errors",
        "wait_count",
        "wait_ms",
        "search_path_sets",
        "param_sets",
        "max_idle_closed",
        "max_idle_time_closed",
        "max_lifetime_closed",
    ]);
    let get = PoolStats::get;
    for p in sorted_pools(shared) {
        let s = &p.stats;
        t.push([
            p.labels.0.clone(),
            p.labels.1.clone(),
            get(&s.checkouts).to_string(),
            get(&s.checkout_errors).to_string(),
            get(&s.wait_count).to_string(),
            (get(&s.wait_nanos) / 1_000_000).to_string(),
            get(&s.search_path_sets).to_string(),
            get(&s.param_sets).to_string(),
            get(&s.max_idle_closed).to_string(),
            get(&s.max_idle_time_closed).to_string(),
            get(&s.max_lifetime_closed).to_string(),
        ]);
    }
    t
}

fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "id",
        "addr",
        "db",
        "schema",
        "user",
        "pool",
        "connect_time",
        "state",
        "pinned",
    ]);
    for c in shared.clients.clients() {
        t.rows.push(vec![
            Some(c.id.to_string()),
            Some(c.peer.to_string()),
            Some(c.db.to_string()),
            Some(c.schema.to_string()),
            Some(c.user.to_string()),
            Some(c.pool.to_string()),
            Some(utc(c.connected_at)),
            Some(c.phase().as_str().to_owned()),
            c.pinned().map(str::to_owned),
        ]);
    }
    t
}

/// Counts per tenant: clients connected, active and waiting.
#[derive(Default)]
struct TenantRow {
    clients: usize,
    active: usize,
    waiting: usize,
}

/// Tenants with clients, and paused tenants even without any.
fn tenants(shared: &Shared) -> Table {
    let pause = shared.clients.pause_set();
    let mut by_tenant: BTreeMap<(String, String), TenantRow> = BTreeMap::new();
    for c in shared.clients.clients() {
        let row = by_tenant.entry(c.tenant()).or_default();
        row.clients += 1;
        match c.phase() {
            Phase::Active => row.active += 1,
            Phase::Waiting => row.waiting += 1,
            Phase::Idle => {}
        }
    }
    for key in &pause.tenants {
        by_tenant.entry(key.clone()).or_default();
    }
    let mut t = Table::new(&["db", "schema", "clients", "active", "waiting", "paused"]);
    for ((db, schema), row) in by_tenant {
        let paused = pause.is_paused(&db, &schema);
        t.push([
            db,
            schema,
            row.clients.to_string(),
            row.active.to_string(),
            row.waiting.to_string(),
            paused.to_string(),
        ]);
    }
    t
}

/// The running configuration with its secrets redacted, one row per leaf key.
fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&["key", "value"]);
    let mut rows = Vec::new();
    flatten("", &shared.admin.config().redacted(), &mut rows);
    for (k, v) in rows {
        t.push([k, v]);
    }
    t
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rows_are_dotted_and_redacted() {
        let mut cfg = crate::config::Config::default();
        cfg.aws.secret_access_key = "very-secret".into();
        cfg.admin.users.insert("ops".into(), "SOMEHASH".into());
        let mut rows = Vec::new();
        flatten("", &cfg.redacted(), &mut rows);
        let get = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PoolSettings.MaxOpen").as_deref(), Some("5"));
        assert_eq!(get("AdminSettings.Database").as_deref(), Some("perseus"));
        assert_eq!(get("OverrideSettings").as_deref(), Some("{}"));
        let text = format!("{rows:?}");
        assert!(
            !text.contains("very-secret") && !text.contains("SOMEHASH"),
            "{text}"
        );
        assert!(get("AdminSettings.Users.ops").is_some());
    }
}
