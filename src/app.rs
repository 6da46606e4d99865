//! Daemon wiring: listener, pools, signals and shutdown.

use std::path::PathBuf;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the data path is not built yet")]
    NotBuilt,
}

/// Runs the daemon until it is told to stop.
pub async fn run(_config_path: PathBuf, _config: Config) -> Result<(), AppError> {
    Err(AppError::NotBuilt)
}
