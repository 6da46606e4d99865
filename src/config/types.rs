//! The configuration snapshot as the rest of the daemon sees it, with the Go Perseus key names on the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whole-second durations, because the Go config stores every timeout as an integer of seconds.
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// Same as [`secs`] for optional fields of per-destination overrides.
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(rename = "ListenAddress")]
    pub listen_address: String,
    /// Empty disables the metrics endpoint.
    #[serde(rename = "MetricsAddress")]
    pub metrics_address: String,
    /// New: bind the client and metrics ports with SO_REUSEPORT, so that a second daemon
    /// with the same configuration can start while this one still runs, and take over its
    /// ports when it shuts down (a restart or upgrade without a moment of refused
    /// connections). Off by default: with it on, a stray second instance would share the
    /// port silently instead of failing to start.
    #[serde(rename = "ListenReusePort")]
    pub listen_reuse_port: bool,
    #[serde(rename = "AuthDBSettings")]
    pub auth_db: AuthDbSettings,
    #[serde(rename = "AWSSettings")]
    pub aws: AwsSettings,
    #[serde(rename = "PoolSettings")]
    pub pool: PoolSettings,
    /// Keyed by `dest_host/dest_db`; fields left out inherit `PoolSettings`.
    #[serde(rename = "OverrideSettings")]
    pub overrides: BTreeMap<String, PoolOverride>,
    #[serde(rename = "LogSettings")]
    pub log: LogSettings,
    /// New: async worker threads; 0 means one per CPU. 1 means tokio's single-threaded
    /// scheduler, which spends the least CPU per transaction (no cross-thread wake-ups), the
    /// choice on a small host shared with PostgreSQL (PgBouncer is single-threaded too).
    #[serde(rename = "WorkerThreads")]
    pub worker_threads: u32,
    /// New: how long SIGTERM lets transactions in flight finish before clients are told to go.
    #[serde(rename = "ShutdownTimeoutSecs", with = "secs")]
    pub shutdown_timeout: Duration,
    /// New: limits on client connections.
    #[serde(rename = "ClientSettings")]
    pub client: ClientSettings,
    /// New: TLS between clients and Perseus.
    #[serde(rename = "TLSSettings")]
    pub tls: TlsSettings,
    /// New: the admin console (SHOW/PAUSE/RESUME/KILL); no users means it is off.
    #[serde(rename = "AdminSettings")]
    pub admin: AdminSettings,
    /// New: brute-force protection (failed logins per source address).
    #[serde(rename = "AuthLimitSettings")]
    pub auth_limit: AuthLimitSettings,
    /// New: TLS between Perseus and the destination servers (libpq's sslmode meanings).
    #[serde(rename = "ServerTLSSettings")]
    pub server_tls: ServerTlsSettings,
    /// New: TCP keepalive and user timeout on client and server connections.
    #[serde(rename = "TCPSettings")]
    pub tcp: TcpSettings,
}

/// libpq's `sslmode` values for the pooler's own connections to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SslMode {
    /// Plaintext only; no SSLRequest is sent.
    #[serde(rename = "disable")]
    Disable,
    /// TLS when the server offers it (unverified), plaintext otherwise.
    #[default]
    #[serde(rename = "prefer")]
    Prefer,
    /// TLS or fail; the certificate is not checked unless RootCertFile is set, in which case
    /// this behaves as `verify-ca` (as libpq does when a root certificate file exists).
    #[serde(rename = "require")]
    Require,
    /// TLS with the server's chain verified against RootCertFile; any host name.
    #[serde(rename = "verify-ca")]
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host Perseus connects to.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl SslMode {
    /// Whether the server's certificate chain must lead to RootCertFile.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The spelling used in the config file and by libpq.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How Perseus secures its connections to destination servers; overridable per destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    #[serde(rename = "SSLMode")]
    pub ssl_mode: SslMode,
    /// PEM file of trusted CA certificates (e.g. the RDS global bundle); required by
    /// verify-ca and verify-full. Re-read on SIGHUP.
    #[serde(rename = "RootCertFile")]
    pub root_cert_file: String,
}

/// Failed logins counted per source address: `MaxFailures` within `WindowSecs` block the
/// address for `WindowSecs`. Zero in either disables it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthLimitSettings {
    #[serde(rename = "MaxFailures")]
    pub max_failures: u32,
    #[serde(rename = "WindowSecs", with = "secs")]
    pub window: Duration,
}

impl Default for AuthLimitSettings {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// TCP keepalive and user timeout on client, server and auth database connections (the
/// last unless its DSN sets them itself): a peer that vanished without closing (a crashed
/// host, a dropped network path, a failed-over database whose packets go nowhere) is found
/// and its connection closed, instead of a client slot or a server connection held for hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSettings {
    #[serde(rename = "Keepalive")]
    pub keepalive: bool,
    /// Silence before the first probe.
    #[serde(rename = "KeepaliveIdleSecs", with = "secs")]
    pub keepalive_idle: Duration,
    #[serde(rename = "KeepaliveIntervalSecs", with = "secs")]
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped.
    #[serde(rename = "KeepaliveCount")]
    pub keepalive_count: u32,
    /// How long sent data may stay unacknowledged before the connection is dropped; 0 leaves
    /// the system's retransmission limit (about 15 minutes on Linux).
    #[serde(rename = "UserTimeoutSecs", with = "secs")]
    pub user_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        // A silent peer is dropped after about two minutes (60 s + 6 × 10 s), where the
        // system default (two hours of silence before the first probe) would hold it all day.
        Self {
            keepalive: true,
            keepalive_idle: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(10),
            keepalive_count: 6,
            user_timeout: Duration::ZERO,
        }
    }
}

/// Who may use the admin console, and the database name that reaches it.
/// `Debug` is written by hand (in `redact.rs`) so the password hashes never reach a log.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// A client naming this database talks to the console instead of a tenant.
    #[serde(rename = "Database")]
    pub database: String,
    /// User name to easy-scrypt hash (as `genhash` prints it).
    #[serde(rename = "Users")]
    pub users: BTreeMap<String, String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            database: "perseus".into(),
            users: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TlsMode {
    /// SSLRequest is answered `N`.
    #[default]
    #[serde(rename = "disable")]
    Disable,
    /// TLS offered, plaintext accepted.
    #[serde(rename = "allow")]
    Allow,
    /// Clients without TLS are refused before they send a password.
    #[serde(rename = "require")]
    Require,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    #[serde(rename = "Mode")]
    pub mode: TlsMode,
    /// PEM certificate chain.
    #[serde(rename = "CertFile")]
    pub cert_file: String,
    /// PEM private key.
    #[serde(rename = "KeyFile")]
    pub key_file: String,
}

/// Limits that protect the daemon from slow, idle or too many clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// Startup plus authentication must finish within this (slowloris guard).
    #[serde(rename = "LoginTimeoutSecs", with = "secs")]
    pub login_timeout: Duration,
    /// 0 means unlimited.
    #[serde(rename = "MaxClientConns")]
    pub max_client_conns: u32,
    /// 0 means unlimited.
    #[serde(rename = "MaxClientConnsPerTenant")]
    pub max_client_conns_per_tenant: u32,
    /// A client idle (outside a transaction) this long is disconnected; 0 disables.
    #[serde(rename = "IdleTimeoutSecs", with = "secs")]
    pub idle_timeout: Duration,
    /// A client silent this long while it holds a server connection (open transaction,
    /// unfinished batch or message) is disconnected and the connection freed; 0 disables.
    #[serde(rename = "IdleInTransactionTimeoutSecs", with = "secs")]
    pub idle_in_transaction_timeout: Duration,
    /// Largest client message accepted; a length field is untrusted input.
    #[serde(rename = "MaxMessageBytes")]
    pub max_message_bytes: u32,
    /// Refuse, with SQLSTATE 0A000, SQL that would pin a client to its server connection
    /// (LISTEN, temporary tables, session advisory locks...) instead of pinning it.
    #[serde(rename = "RefusePinning")]
    pub refuse_pinning: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            login_timeout: Duration::from_secs(15),
            max_client_conns: 10_000,
            max_client_conns_per_tenant: 0,
            idle_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::ZERO,
            max_message_bytes: 64 << 20,
            refuse_pinning: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_address: ":5433".into(),
            metrics_address: ":5000".into(),
            listen_reuse_port: false,
            auth_db: AuthDbSettings::default(),
            aws: AwsSettings::default(),
            pool: PoolSettings::default(),
            overrides: BTreeMap::new(),
            log: LogSettings::default(),
            worker_threads: 0,
            shutdown_timeout: Duration::from_secs(30),
            client: ClientSettings::default(),
            tls: TlsSettings::default(),
            admin: AdminSettings::default(),
            auth_limit: AuthLimitSettings::default(),
            server_tls: ServerTlsSettings::default(),
            tcp: TcpSettings::default(),
        }
    }
}

/// `Debug` is written by hand (in `redact.rs`) so the DSN password never reaches a log.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthDbSettings {
    /// `postgres://` URL; may carry pgxpool parameters (`pool_max_conns`, ...).
    #[serde(rename = "AuthDBDSN")]
    pub dsn: String,
    #[serde(rename = "AuthQueryTimeoutSecs", with = "secs")]
    pub query_timeout: Duration,
    /// How long a tenant row is trusted before it is looked up again.
    #[serde(rename = "CacheTTLSecs", with = "secs")]
    pub cache_ttl: Duration,
}

impl Default for AuthDbSettings {
    fn default() -> Self {
        Self {
            dsn: String::new(),
            query_timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// `Debug` is written by hand (in `redact.rs`) so SecretAccessKey never reaches a log.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    #[serde(rename = "Region")]
    pub region: String,
    #[serde(rename = "Endpoint")]
    pub endpoint: String,
    #[serde(rename = "KMSKeyARN")]
    pub kms_key_arn: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    #[serde(rename = "MaxIdle")]
    pub max_idle: u32,
    #[serde(rename = "MaxOpen")]
    pub max_open: u32,
    /// 0 means no limit, as in the Go pool.
    #[serde(rename = "MaxLifetimeSecs", with = "secs")]
    pub max_lifetime: Duration,
    /// 0 means no limit, as in the Go pool.
    #[serde(rename = "MaxIdletimeSecs", with = "secs")]
    pub max_idle_time: Duration,
    #[serde(rename = "ConnCreateTimeoutSecs", with = "secs")]
    pub conn_create_timeout: Duration,
    #[serde(rename = "ConnCloseTimeoutSecs", with = "secs")]
    pub conn_close_timeout: Duration,
    #[serde(rename = "SchemaExecTimeoutSecs", with = "secs")]
    pub schema_exec_timeout: Duration,
    /// New in the Rust Perseus: how long a client may wait for a server connection.
    #[serde(rename = "WaitTimeoutSecs", with = "secs")]
    pub wait_timeout: Duration,
    /// New: named prepared statements kept per server connection (LRU, evicted with Close).
    #[serde(rename = "MaxPreparedStatements")]
    pub max_prepared_statements: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle: 3,
            max_open: 5,
            max_lifetime: Duration::from_secs(3600),
            max_idle_time: Duration::from_secs(300),
            conn_create_timeout: Duration::from_secs(5),
            conn_close_timeout: Duration::from_secs(1),
            schema_exec_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(30),
            max_prepared_statements: 200,
        }
    }
}

/// A per-destination override: every field optional, absent means "as PoolSettings".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolOverride {
    #[serde(rename = "MaxIdle", skip_serializing_if = "Option::is_none")]
    pub max_idle: Option<u32>,
    #[serde(rename = "MaxOpen", skip_serializing_if = "Option::is_none")]
    pub max_open: Option<u32>,
    #[serde(
        rename = "MaxLifetimeSecs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lifetime: Option<Duration>,
    #[serde(
        rename = "MaxIdletimeSecs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_idle_time: Option<Duration>,
    #[serde(
        rename = "ConnCreateTimeoutSecs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub conn_create_timeout: Option<Duration>,
    #[serde(
        rename = "ConnCloseTimeoutSecs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub conn_close_timeout: Option<Duration>,
    #[serde(
        rename = "SchemaExecTimeoutSecs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_exec_timeout: Option<Duration>,
    #[serde(
        rename = "WaitTimeoutSecs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub wait_timeout: Option<Duration>,
    #[serde(
        rename = "MaxPreparedStatements",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_prepared_statements: Option<u32>,
    /// ServerTLSSettings.SSLMode for this destination.
    #[serde(rename = "SSLMode", skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<SslMode>,
    /// ServerTLSSettings.RootCertFile for this destination.
    #[serde(rename = "RootCertFile", skip_serializing_if = "Option::is_none")]
    pub root_cert_file: Option<String>,
}

impl PoolOverride {
    pub fn apply(&self, base: &PoolSettings) -> PoolSettings {
        PoolSettings {
            max_idle: self.max_idle.unwrap_or(base.max_idle),
            max_open: self.max_open.unwrap_or(base.max_open),
            max_lifetime: self.max_lifetime.unwrap_or(base.max_lifetime),
            max_idle_time: self.max_idle_time.unwrap_or(base.max_idle_time),
            conn_create_timeout: self.conn_create_timeout.unwrap_or(base.conn_create_timeout),
            conn_close_timeout: self.conn_close_timeout.unwrap_or(base.conn_close_timeout),
            schema_exec_timeout: self.schema_exec_timeout.unwrap_or(base.schema_exec_timeout),
            wait_timeout: self.wait_timeout.unwrap_or(base.wait_timeout),
            max_prepared_statements: self
                .max_prepared_statements
                .unwrap_or(base.max_prepared_statements),
        }
    }

    /// The server TLS settings for this destination, fields left out inherited from `base`.
    pub fn apply_tls(&self, base: &ServerTlsSettings) -> ServerTlsSettings {
        ServerTlsSettings {
            ssl_mode: self.ssl_mode.unwrap_or(base.ssl_mode),
            root_cert_file: self
                .root_cert_file
                .clone()
                .unwrap_or_else(|| base.root_cert_file.clone()),
        }
    }
}

impl Config {
    /// Effective pool settings for a destination: the override keyed `dest_host/dest_db` wins.
    pub fn pool_settings_for(&self, dest_host: &str, dest_db: &str) -> PoolSettings {
        let key = format!("{dest_host}/{dest_db}");
        match self.overrides.get(&key) {
            Some(o) => o.apply(&self.pool),
            None => self.pool.clone(),
        }
    }

    /// Effective server TLS settings for a destination: the override keyed `dest_host/dest_db` wins.
    pub fn server_tls_for(&self, dest_host: &str, dest_db: &str) -> ServerTlsSettings {
        let key = format!("{dest_host}/{dest_db}");
        match self.overrides.get(&key) {
            Some(o) => o.apply_tls(&self.server_tls),
            None => self.server_tls.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    #[serde(rename = "Level")]
    pub level: String,
    #[serde(rename = "Json")]
    pub json: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            json: false,
        }
    }
}
