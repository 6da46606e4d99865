//! Rules a parsed configuration must satisfy before the daemon uses it; every broken rule is
//! reported with the key's path and what would be acceptable.

use std::net::SocketAddr;
use std::time::Duration;

use super::schema::{OVERRIDES, POOL};
use super::{Config, ConfigError, ConfigErrors, LogSettings, PoolSettings, TcpSettings, addr};

/// Ten years: larger values would overflow deadline arithmetic and are surely typos.
pub const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

impl Config {
    /// Every rule the configuration breaks; empty when it is usable.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let listen = match self.listen_addrs() {
            Ok(a) => a,
            Err(e) => {
                out.push(e);
                Vec::new()
            }
        };
        match self.metrics_addrs() {
            Ok(metrics) => {
                if let Some(clash) = metrics.iter().find(|m| listen.contains(m)) {
                    out.push(ConfigError::invalid(
                        "MetricsAddress",
                        format!("{clash} is also the ListenAddress; give metrics another port"),
                    ));
                }
            }
            Err(e) => out.push(e),
        }
        if let Err(e) = self.auth_db.parse_dsn() {
            out.push(e);
        }
        positive(
            &mut out,
            "AuthDBSettings.AuthQueryTimeoutSecs",
            self.auth_db.query_timeout,
        );
        at_most(
            &mut out,
            "AuthDBSettings.CacheTTLSecs",
            self.auth_db.cache_ttl,
        );
        let aws = &self.aws;
        if aws.access_key_id.is_empty() != aws.secret_access_key.is_empty() {
            out.push(ConfigError::invalid(
                "AWSSettings",
                "set both AccessKeyId and SecretAccessKey, or neither (to use the AWS default credential chain)",
            ));
        }
        if !aws.endpoint.is_empty() {
            match url::Url::parse(&aws.endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => out.push(ConfigError::invalid(
                    "AWSSettings.Endpoint",
                    format!("`{}` is not an http:// or https:// URL", aws.endpoint),
                )),
            }
        }
        let base = pool_problems(&self.pool);
        out.extend(prefixed(POOL, base.clone()));
        for (name, o) in &self.overrides {
            let place = format!("{OVERRIDES}[{name:?}]");
            if let Err(reason) = check_override_key(name) {
                out.push(ConfigError::invalid(place.clone(), reason));
            }
            // What the override inherits unchanged from PoolSettings is reported there once.
            let own = pool_problems(&o.apply(&self.pool))
                .into_iter()
                .filter(|p| !base.contains(p));
            out.extend(prefixed(&place, own.collect()));
        }
        if let Err(reason) = self.log.tracing_level() {
            out.push(ConfigError::invalid("LogSettings.Level", reason));
        }
        if self.tls.mode != super::TlsMode::Disable
            && (self.tls.cert_file.is_empty() || self.tls.key_file.is_empty())
        {
            out.push(ConfigError::invalid(
                "TLSSettings",
                "Mode allow/require needs CertFile and KeyFile",
            ));
        }
        if let Some(reason) = server_tls_problem(&self.server_tls) {
            out.push(ConfigError::invalid("ServerTLSSettings", reason));
        }
        for (name, o) in &self.overrides {
            let own = server_tls_problem(&o.apply_tls(&self.server_tls));
            if let Some(reason) = own.filter(|_| o.ssl_mode.is_some() || o.root_cert_file.is_some())
            {
                out.push(ConfigError::invalid(
                    format!("{OVERRIDES}[{name:?}]"),
                    reason,
                ));
            }
        }
        positive(&mut out, "ShutdownTimeoutSecs", self.shutdown_timeout);
        at_most(&mut out, "ShutdownTimeoutSecs", self.shutdown_timeout);
        positive(
            &mut out,
            "ClientSettings.LoginTimeoutSecs",
            self.client.login_timeout,
        );
        at_most(
            &mut out,
            "ClientSettings.LoginTimeoutSecs",
            self.client.login_timeout,
        );
        at_most(
            &mut out,
            "ClientSettings.IdleTimeoutSecs",
            self.client.idle_timeout,
        );
        at_most(
            &mut out,
            "ClientSettings.IdleInTransactionTimeoutSecs",
            self.client.idle_in_transaction_timeout,
        );
        self.tcp.check(&mut out);
        if !(1024..=(1 << 30)).contains(&self.client.max_message_bytes) {
            out.push(ConfigError::invalid(
                "ClientSettings.MaxMessageBytes",
                "must be between 1024 and 1073741824",
            ));
        }
        out
    }

    /// `Ok` when [`Config::problems`] finds nothing.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Socket addresses to accept clients on (see [`addr::resolve`] for `:port`).
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        addr::resolve(&self.listen_address).map_err(|r| ConfigError::invalid("ListenAddress", r))
    }

    /// Socket addresses for the metrics endpoint; empty when `MetricsAddress` is "" (disabled).
    pub fn metrics_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        if self.metrics_address.is_empty() {
            return Ok(Vec::new());
        }
        addr::resolve(&self.metrics_address).map_err(|r| ConfigError::invalid("MetricsAddress", r))
    }
}

impl LogSettings {
    /// The level named by `Level`: debug, info, warn or error, any case.
    pub fn tracing_level(&self) -> Result<tracing::Level, String> {
        match self.level.to_ascii_lowercase().as_str() {
            "debug" => Ok(tracing::Level::DEBUG),
            "info" => Ok(tracing::Level::INFO),
            "warn" => Ok(tracing::Level::WARN),
            "error" => Ok(tracing::Level::ERROR),
            _ => Err(format!(
                "`{}` is not one of debug, info, warn, error",
                self.level
            )),
        }
    }
}

/// verify-ca and verify-full trust only RootCertFile: there is no implicit system store.
fn server_tls_problem(s: &super::ServerTlsSettings) -> Option<String> {
    (s.ssl_mode.verifies() && s.root_cert_file.trim().is_empty()).then(|| {
        format!(
            "SSLMode {} needs RootCertFile: a PEM file of the CA certificates to trust \
             (for RDS, the global-bundle.pem from AWS)",
            s.ssl_mode.as_str()
        )
    })
}

/// Problems of one set of pool settings, keyed by field name alone.
fn pool_problems(p: &PoolSettings) -> Vec<ConfigError> {
    let mut out = Vec::new();
    if p.max_open < 1 {
        out.push(ConfigError::invalid(
            "MaxOpen",
            "must be at least 1 (server connections per destination)",
        ));
    } else if p.max_idle > p.max_open {
        out.push(ConfigError::invalid(
            "MaxIdle",
            format!(
                "{} is larger than MaxOpen ({}); lower it or raise MaxOpen",
                p.max_idle, p.max_open
            ),
        ));
    }
    // 0 means "no limit" for these two, as in the Go pool.
    at_most(&mut out, "MaxLifetimeSecs", p.max_lifetime);
    at_most(&mut out, "MaxIdletimeSecs", p.max_idle_time);
    for (key, d) in [
        ("ConnCreateTimeoutSecs", p.conn_create_timeout),
        ("ConnCloseTimeoutSecs", p.conn_close_timeout),
        ("SchemaExecTimeoutSecs", p.schema_exec_timeout),
        ("WaitTimeoutSecs", p.wait_timeout),
    ] {
        positive(&mut out, key, d);
    }
    out
}

fn prefixed(section: &str, problems: Vec<ConfigError>) -> Vec<ConfigError> {
    problems
        .into_iter()
        .map(|p| match p {
            ConfigError::Invalid { key, reason } => {
                ConfigError::invalid(format!("{section}.{key}"), reason)
            }
            other => other,
        })
        .collect()
}

impl TcpSettings {
    /// Linux's bounds: TCP_KEEPIDLE and TCP_KEEPINTVL take at most 32767 s, TCP_KEEPCNT
    /// at most 127 probes, TCP_USER_TIMEOUT milliseconds in an unsigned int.
    fn check(&self, out: &mut Vec<ConfigError>) {
        const MAX_KEEPALIVE_SECS: u64 = 32767;
        const MAX_USER_TIMEOUT_SECS: u64 = u32::MAX as u64 / 1000;
        if self.keepalive {
            for (key, d) in [
                ("TCPSettings.KeepaliveIdleSecs", self.keepalive_idle),
                ("TCPSettings.KeepaliveIntervalSecs", self.keepalive_interval),
            ] {
                if !(1..=MAX_KEEPALIVE_SECS).contains(&d.as_secs()) {
                    out.push(ConfigError::invalid(
                        key,
                        format!("must be between 1 and {MAX_KEEPALIVE_SECS} seconds"),
                    ));
                }
            }
            if !(1..=127).contains(&self.keepalive_count) {
                out.push(ConfigError::invalid(
                    "TCPSettings.KeepaliveCount",
                    "must be between 1 and 127",
                ));
            }
        }
        if self.user_timeout.as_secs() > MAX_USER_TIMEOUT_SECS {
            out.push(ConfigError::invalid(
                "TCPSettings.UserTimeoutSecs",
                format!("must be at most {MAX_USER_TIMEOUT_SECS} seconds (0 leaves the system's)"),
            ));
        }
    }
}

fn positive(out: &mut Vec<ConfigError>, key: &str, d: Duration) {
    if d.is_zero() {
        out.push(ConfigError::invalid(key, "must be at least 1 second"));
    } else {
        at_most(out, key, d);
    }
}

fn at_most(out: &mut Vec<ConfigError>, key: &str, d: Duration) {
    if d.as_secs() > MAX_SECS {
        out.push(ConfigError::invalid(
            key,
            format!(
                "{} seconds is more than the limit of {MAX_SECS} (ten years)",
                d.as_secs()
            ),
        ));
    }
}

/// Override names are `dest_host/dest_db`, with `dest_host` as stored in `perseus_auth`.
fn check_override_key(name: &str) -> Result<(), String> {
    let hint = "keys must look like `dest_host/dest_db` or `dest_host:port/dest_db`";
    let (host, db) = name
        .split_once('/')
        .ok_or_else(|| format!("the key has no `/`; {hint}"))?;
    if host.is_empty() || db.is_empty() || db.contains('/') {
        return Err(format!(
            "the key needs exactly one `/` with text on both sides; {hint}"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("the key contains whitespace; {hint}"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.split_once(']'));
    let port = match bare {
        Some((_, rest)) => rest.strip_prefix(':'),
        None if host.matches(':').count() == 1 => host.split_once(':').map(|(_, p)| p),
        None => None,
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!(
            "port `{port}` is not a number from 1 to 65535; {hint}"
        ));
    }
    Ok(())
}
