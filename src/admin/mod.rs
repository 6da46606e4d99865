//! The admin console: a PostgreSQL-speaking endpoint (the `AdminSettings.Database` database)
//! where operators inspect pools, clients and tenants and pause, resume or kill tenants.

pub mod actions;
pub mod clock;
pub mod command;
pub mod resultset;
pub mod session;
pub mod show;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::config::Config;
use crate::proto::startup::StartupParams;

pub use session::serve;

/// The console's view of the daemon: the running configuration and where it came from.
pub struct Admin {
    config: RwLock<Arc<Config>>,
    /// The file RELOAD validates before asking the daemon to reload it.
    config_path: PathBuf,
    pub started: SystemTime,
}

impl Admin {
    pub fn new(config_path: PathBuf, config: Arc<Config>) -> Self {
        Admin {
            config: RwLock::new(config),
            config_path,
            started: SystemTime::now(),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("admin config lock").clone()
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Takes a reloaded configuration (admin users included) into use.
    pub fn apply_config(&self, config: Arc<Config>) {
        let mut cur = self.config.write().expect("admin config lock");
        if cur.admin != config.admin {
            let users: Vec<&String> = config.admin.users.keys().collect();
            tracing::info!(database = %config.admin.database, ?users, "admin console settings applied");
        }
        *cur = config;
    }

    /// True when a StartupMessage asks for the console: its database is the admin database
    /// and the console has users (no users means it is off and the name is an ordinary tenant
    /// database).
    pub fn is_console(&self, params: &StartupParams) -> bool {
        let cfg = self.config();
        !cfg.admin.users.is_empty() && params.get("database") == Some(cfg.admin.database.as_str())
    }
}

/// `Perseus <version>`, as SHOW VERSION and server_version report it.
pub fn version() -> String {
    format!("Perseus {}", env!("CARGO_PKG_VERSION"))
}
