//! Printing configuration without its secrets: `--check` output, `Debug`, logs.

use std::fmt;

use serde_json::Value;

use super::dsn::REDACTED;
use super::{AdminSettings, AuthDbSettings, AwsSettings, Config};

impl Config {
    /// A copy with SecretAccessKey, the DSN password and the admin password hashes replaced
    /// by `<redacted>`.
    /// An empty secret stays empty so an operator can see it is unset.
    pub fn redacted_copy(&self) -> Config {
        let mut c = self.clone();
        c.aws.secret_access_key = secret(&self.aws.secret_access_key).to_string();
        c.auth_db.dsn = self.auth_db.redacted_dsn();
        for hash in c.admin.users.values_mut() {
            *hash = secret(hash).to_string();
        }
        c
    }

    /// The effective configuration as JSON, secrets hidden (see [`Config::redacted_copy`]).
    pub fn redacted(&self) -> Value {
        serde_json::to_value(self.redacted_copy()).unwrap_or(Value::Null)
    }

    /// [`Config::redacted`] pretty-printed, keys in the order of the Go sample.
    pub fn redacted_json(&self) -> String {
        serde_json::to_string_pretty(&self.redacted_copy()).unwrap_or_default()
    }
}

fn secret(s: &str) -> &str {
    if s.is_empty() { "" } else { REDACTED }
}

impl fmt::Debug for AuthDbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthDbSettings")
            .field("dsn", &self.redacted_dsn())
            .field("query_timeout", &self.query_timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret(&self.secret_access_key))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("kms_key_arn", &self.kms_key_arn)
            .finish()
    }
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&String> = self.users.keys().collect();
        f.debug_struct("AdminSettings")
            .field("database", &self.database)
            .field("users", &users)
            .finish()
    }
}
