//! TLS for the pooler's own auth-DB connections, from the `sslmode`/`sslrootcert` in
//! AuthDBDSN, so an auth database that requires TLS (RDS with rds.force_ssl=1) works.

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DsnTls, ServerTlsSettings, SslMode, TlsVerify};
use crate::pool::tls::{ServerTls, ServerTlsError};

/// A connector for tokio-postgres; whether TLS is used at all is still up to the DSN's
/// sslmode (disable never tries, prefer falls back, require insists).
pub fn auth_db_connector(tls: &DsnTls) -> Result<MakeRustlsConnect, ServerTlsError> {
    let settings = ServerTlsSettings {
        ssl_mode: match tls.verify {
            TlsVerify::None => SslMode::Require,
            TlsVerify::Ca => SslMode::VerifyCa,
            TlsVerify::Full => SslMode::VerifyFull,
        },
        root_cert_file: tls
            .root_cert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    };
    let policy = ServerTls::build(&settings, "AuthDBSettings.AuthDBDSN")?;
    let config = policy
        .client_config()
        .expect("a mode other than disable always has a TLS configuration");
    Ok(MakeRustlsConnect::new((*config).clone()))
}
