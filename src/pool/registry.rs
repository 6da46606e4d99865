//! The pool registry: destination key to pool, with the destination password decrypted once
//! and the pools retuned when the configuration changes.

use crate::net::tcp::TcpOptions;
use std::sync::{Arc, Mutex};

use foldhash::{HashMap, HashMapExt};

use super::dest_pool::DestPool;
use super::destination::{BadDestHost, DestKey};
use super::tls::{ServerTlsError, ServerTlsSet};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::secrets::kms::{Kms, SecretError};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    BadHost(#[from] BadDestHost),
    #[error("cannot decrypt the destination password: {0}")]
    Decrypt(#[from] SecretError),
    #[error("server TLS settings unusable: {0}")]
    Tls(#[from] ServerTlsError),
}

pub struct Registry {
    pools: Mutex<HashMap<DestKey, Arc<DestPool>>>,
    /// Serialises first-time setup of a destination so a login storm decrypts once.
    creating: tokio::sync::Mutex<()>,
    config: Mutex<Arc<Config>>,
    /// Server TLS policies built from `config` (root files read once per reload).
    tls: Mutex<Arc<ServerTlsSet>>,
    kms: Kms,
    metrics: Arc<Metrics>,
    /// From the configuration at start, like the client side's (`TCPSettings` needs a
    /// restart), so every server connection of a run is made alike.
    tcp: TcpOptions,
}

impl Registry {
    /// `tls` is [`ServerTlsSet::from_config`] of `config`, built by the caller so that an
    /// unreadable RootCertFile stops the daemon at start.
    pub fn new(config: Arc<Config>, tls: ServerTlsSet, kms: Kms, metrics: Arc<Metrics>) -> Self {
        Registry {
            tcp: TcpOptions::from(&config.tcp),
            tls: Mutex::new(Arc::new(tls)),
            metrics,
            pools: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            config: Mutex::new(config),
            kms,
        }
    }

    fn lookup(&self, key: &DestKey, ciphertext: &str) -> Option<Arc<DestPool>> {
        let pools = self.pools.lock().expect("registry lock");
        pools
            .get(key)
            .filter(|p| p.knows_ciphertext(ciphertext))
            .cloned()
    }

    /// The pool for a destination, creating it (and decrypting its password) on first use.
    pub async fn pool_for(
        &self,
        key: &DestKey,
        ciphertext: &str,
    ) -> Result<Arc<DestPool>, RouteError> {
        if let Some(p) = self.lookup(key, ciphertext) {
            return Ok(p);
        }
        let _guard = self.creating.lock().await;
        if let Some(p) = self.lookup(key, ciphertext) {
            return Ok(p);
        }
        let password = self.kms.decrypt(ciphertext).await;
        self.metrics.kms_decrypt(password.is_ok());
        let password = password?;
        let existing = self.pools.lock().expect("registry lock").get(key).cloned();
        if let Some(p) = existing
            && p.adopt_ciphertext(ciphertext, &password)
        {
            return Ok(p);
        }
        let (settings, tls) = {
            let cfg = self.config.lock().expect("config lock");
            let tls = self.tls.lock().expect("tls lock").clone();
            let label = key.dest_host_label();
            (
                cfg.pool_settings_for(&label, &key.db),
                tls.for_dest(&cfg, &label, &key.db)?,
            )
        };
        let pool = DestPool::new(
            key.clone(),
            password,
            ciphertext.to_owned(),
            settings,
            tls,
            self.tcp,
        );
        tracing::info!(pool = %pool.name(), dest_user = %key.user, "pool created");
        let old = self
            .pools
            .lock()
            .expect("registry lock")
            .insert(key.clone(), pool.clone());
        if let Some(old) = old {
            // Sessions still holding the old pool finish on it; it goes when they do.
            tracing::info!(pool = %old.name(), "destination password changed; new pool for new logins");
        }
        Ok(pool)
    }

    pub fn pools(&self) -> Vec<Arc<DestPool>> {
        self.pools
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }

    /// Retunes every live pool to a new configuration snapshot and its server TLS policies
    /// (built by the caller from the same snapshot, so a bad root file refuses the reload).
    pub fn apply_config(&self, config: Arc<Config>, tls: ServerTlsSet) {
        // Swap first: a pool created meanwhile then sees the new settings, and the loop below
        // retunes any pool that was created just before.
        *self.config.lock().expect("config lock") = config.clone();
        *self.tls.lock().expect("tls lock") = Arc::new(tls);
        let tls = self.tls.lock().expect("tls lock").clone();
        for pool in self.pools() {
            let s = config.pool_settings_for(&pool.labels.0, &pool.labels.1);
            if s != pool.settings() {
                tracing::info!(pool = %pool.name(), ?s, "pool settings applied");
                pool.apply_settings(s);
            }
            match tls.for_dest(&config, &pool.labels.0, &pool.labels.1) {
                Ok(policy) => {
                    let settings = policy.settings.clone();
                    if pool.set_tls(policy) {
                        tracing::info!(pool = %pool.name(), ssl_mode = settings.ssl_mode.as_str(),
                            root_cert_file = %settings.root_cert_file,
                            "server TLS settings applied; connections made under the old ones retire");
                    }
                }
                Err(e) => tracing::error!(pool = %pool.name(), error = %e,
                    "server TLS settings not applied; keeping the old ones"),
            }
        }
    }

    /// Reaps every pool. `scratch` is the caller's to keep between calls, so a periodic
    /// reaper allocates nothing per tick; pools are reaped outside the registry lock.
    pub fn reap_all(&self, scratch: &mut Vec<Arc<DestPool>>) {
        scratch.clear();
        scratch.extend(self.pools.lock().expect("registry lock").values().cloned());
        for pool in scratch.drain(..) {
            pool.reap();
        }
    }

    pub fn close_all(&self) {
        for pool in self.pools() {
            pool.close();
        }
    }
}
