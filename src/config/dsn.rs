//! The auth-DB DSN: pgxpool's `pool_*` parameters and pgx's TLS verification modes are honoured
//! here and removed before the rest reaches tokio-postgres, which rejects what it does not know.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::dsn_split::{self, Param, Split};
use super::{AuthDbSettings, ConfigError, parse_go_duration};

pub(crate) const DSN_KEY: &str = "AuthDBSettings.AuthDBDSN";
pub(crate) const REDACTED: &str = "<redacted>";

/// Pool parameters from the DSN, with pgxpool's defaults for the ones left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPoolParams {
    /// `pool_max_conns`; default max(4, number of CPUs).
    pub max_conns: usize,
    /// `pool_min_conns`; default 0.
    pub min_conns: usize,
    /// `pool_min_idle_conns`; default 0.
    pub min_idle_conns: usize,
    /// `pool_max_conn_lifetime`; default 1h.
    pub max_conn_lifetime: Duration,
    /// `pool_max_conn_lifetime_jitter`; default 0.
    pub max_conn_lifetime_jitter: Duration,
    /// `pool_max_conn_idle_time`; default 30m.
    pub max_conn_idle_time: Duration,
    /// `pool_health_check_period`; default 1m.
    pub health_check_period: Duration,
    /// TLS requirements tokio-postgres cannot express itself (pgx's `verify-*` modes).
    pub tls: DsnTls,
    /// The DSN sets TCP keepalive or user timeout itself (`keepalives*`,
    /// `tcp_user_timeout`); `TCPSettings` then leaves the auth DB connection alone.
    pub tcp_in_dsn: bool,
}

impl Default for AuthPoolParams {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            max_conns: cpus.max(4),
            min_conns: 0,
            min_idle_conns: 0,
            max_conn_lifetime: Duration::from_secs(3600),
            max_conn_lifetime_jitter: Duration::ZERO,
            max_conn_idle_time: Duration::from_secs(30 * 60),
            health_check_period: Duration::from_secs(60),
            tls: DsnTls::default(),
            tcp_in_dsn: false,
        }
    }
}

/// How the TLS connector must check the auth DB's certificate. For `Ca` and `Full` the
/// tokio-postgres config carries `sslmode=require`, so TLS is mandatory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsnTls {
    pub verify: TlsVerify,
    /// `sslrootcert`: PEM bundle of trusted roots; system roots when absent.
    pub root_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVerify {
    /// `disable`, `allow`, `prefer`, `require`: as pgx, the certificate is not checked.
    #[default]
    None,
    /// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
    Ca,
    /// `verify-full`: chain and host name are checked.
    Full,
}

impl AuthDbSettings {
    /// Parses `AuthDBDSN`, returning the tokio-postgres config (no pool parameters left in it)
    /// and the pool parameters. Error texts never include the DSN.
    pub fn parse_dsn(&self) -> Result<(tokio_postgres::Config, AuthPoolParams), ConfigError> {
        let err = |reason: String| ConfigError::invalid(DSN_KEY, reason);
        if self.dsn.trim().is_empty() {
            return Err(err(
                "is empty; set it (or PERSEUS_AUTHDBSETTINGS_AUTHDBDSN) to a URL such as \
                 postgres://perseus:PASSWORD@db.internal:5432/perseus"
                    .into(),
            ));
        }
        let split = dsn_split::split(&self.dsn).map_err(err)?;
        let mut params = AuthPoolParams::default();
        let mut kept: Vec<String> = Vec::new();
        for p in &split.params {
            if let Some(replacement) = take(p, &mut params).map_err(err)? {
                params.tcp_in_dsn |= p.key.starts_with("keepalives") || p.key == "tcp_user_timeout";
                kept.push(replacement);
            }
        }
        if params.min_conns > params.max_conns {
            return Err(err(format!(
                "pool_min_conns ({}) is larger than pool_max_conns ({})",
                params.min_conns, params.max_conns
            )));
        }
        let rest = split.join(kept.iter().map(String::as_str));
        let pg = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            // tokio-postgres puts the useful part ("unknown option `x`") in the source.
            let detail =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            err(format!(
                "{detail} (the Rust Perseus passes on only parameters tokio-postgres knows)"
            ))
        })?;
        if pg.get_hosts().is_empty() {
            return Err(err(
                "names no host; add one, e.g. postgres://user:PASSWORD@HOST:5432/db".into(),
            ));
        }
        if pg.get_user().is_none() {
            return Err(err(
                "names no user; add one, e.g. postgres://USER:PASSWORD@host:5432/db".into(),
            ));
        }
        Ok((pg, params))
    }

    /// The DSN with its password (in the credentials or a `password` parameter) hidden.
    pub fn redacted_dsn(&self) -> String {
        redact(&self.dsn)
    }
}

/// Consumes one DSN parameter that is ours; returns the raw text to keep for tokio-postgres.
fn take(p: &Param, params: &mut AuthPoolParams) -> Result<Option<String>, String> {
    let count = |v: &str, min: usize| -> Result<usize, String> {
        match v.parse::<i32>() {
            Ok(n) if n >= 0 && n as usize >= min => Ok(n as usize),
            _ => Err(format!(
                "{} must be a whole number of at least {min}, got `{v}`",
                p.key
            )),
        }
    };
    let duration = |v: &str| parse_go_duration(v).map_err(|e| format!("{}: {e}", p.key));
    let v = p.value.as_str();
    match p.key.as_str() {
        "pool_max_conns" => params.max_conns = count(v, 1)?,
        "pool_min_conns" => params.min_conns = count(v, 0)?,
        "pool_min_idle_conns" => params.min_idle_conns = count(v, 0)?,
        "pool_max_conn_lifetime" => params.max_conn_lifetime = duration(v)?,
        "pool_max_conn_lifetime_jitter" => params.max_conn_lifetime_jitter = duration(v)?,
        "pool_max_conn_idle_time" => params.max_conn_idle_time = duration(v)?,
        "pool_health_check_period" => params.health_check_period = duration(v)?,
        "sslrootcert" => params.tls.root_cert = Some(PathBuf::from(v)),
        // SNI is what the TLS connector does anyway.
        "sslsni" => {}
        "sslcert" | "sslkey" | "sslpassword" => {
            return Err(format!(
                "{} (TLS client certificates) is not supported for the auth DB",
                p.key
            ));
        }
        "sslmode" => {
            let (verify, mode) = match v {
                "verify-ca" => (TlsVerify::Ca, "require"),
                "verify-full" => (TlsVerify::Full, "require"),
                // tokio-postgres has no `allow`; `prefer` also tries without TLS.
                "allow" => (TlsVerify::None, "prefer"),
                "disable" | "prefer" | "require" => (TlsVerify::None, v),
                _ => {
                    return Err(format!(
                        "sslmode `{v}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ));
                }
            };
            params.tls.verify = verify;
            return Ok(Some(format!("sslmode={mode}")));
        }
        _ => return Ok(Some(p.raw.clone())),
    }
    Ok(None)
}

fn redact(dsn: &str) -> String {
    let Ok(split) = dsn_split::split(dsn) else {
        return format!("{REDACTED} (unparseable DSN)");
    };
    let params: Vec<String> = split
        .params
        .iter()
        .map(|p| match p.key.as_str() {
            "password" | "sslpassword" if split.url => format!("{}={REDACTED}", p.key),
            "password" | "sslpassword" => format!("{}={}", p.key, dsn_split::quote(REDACTED)),
            _ => p.raw.clone(),
        })
        .collect();
    let head = redact_credentials(&split);
    Split { head, ..split }.join(params.iter().map(String::as_str))
}

/// `postgres://user:secret@host` becomes `postgres://user:<redacted>@host`.
fn redact_credentials(split: &Split) -> String {
    let head = &split.head;
    let Some(scheme_end) = head.find("://").map(|i| i + 3) else {
        return head.clone();
    };
    let Some(at) = head[scheme_end..].find('@').map(|i| scheme_end + i) else {
        return head.clone();
    };
    match head[scheme_end..at].find(':') {
        Some(colon) => format!("{}:{REDACTED}{}", &head[..scheme_end + colon], &head[at..]),
        None => head.clone(),
    }
}
