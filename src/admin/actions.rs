//! What each console command does: SHOW builds a table, RELOAD checks the config file and asks
//! the daemon to reload it, PAUSE/RESUME/KILL act on tenants through the client registry.

use super::command::Command;
use super::resultset::Table;
use super::show::show;
use crate::session::Shared;

/// A command's answer: an optional table and the CommandComplete tag.
#[derive(Debug)]
pub struct Reply {
    pub table: Option<Table>,
    pub tag: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The file on disk would be refused by a reload; nothing was signalled.
    #[error("RELOAD refused, the running configuration stays: {0}")]
    BadConfig(String),
    #[error("RELOAD failed: {0}")]
    Signal(String),
}

impl ActionError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ActionError::BadConfig(_) => "F0000",
            ActionError::Signal(_) => "XX000",
        }
    }
}

pub async fn execute(cmd: &Command, shared: &Shared) -> Result<Reply, ActionError> {
    let tag = cmd.tag();
    match cmd {
        Command::Show(what) => {
            return Ok(Reply {
                table: Some(show(*what, shared)),
                tag,
            });
        }
        Command::Reload => reload(shared).await?,
        Command::Pause(t) => {
            shared.clients.pause(t.as_ref());
            tracing::info!(tenant = %describe(t), "admin: PAUSE");
        }
        Command::Resume(t) => {
            shared.clients.resume(t.as_ref());
            tracing::info!(tenant = %describe(t), "admin: RESUME");
        }
        Command::Kill(t) => {
            let n = shared.clients.kill(t);
            tracing::info!(db = %t.0, schema = %t.1, clients = n, "admin: KILL");
        }
    }
    Ok(Reply { table: None, tag })
}

fn describe(t: &Option<(String, String)>) -> String {
    match t {
        Some((db, schema)) => format!("{db}/{schema}"),
        None => "all".into(),
    }
}

/// Validates the config file the way SIGHUP will, so a bad edit is reported to the operator
/// right here, then raises SIGHUP so the daemon's one reload path applies it.
async fn reload(shared: &Shared) -> Result<(), ActionError> {
    let path = shared.admin.config_path().to_path_buf();
    let checked = tokio::task::spawn_blocking(move || crate::config::load(&path))
        .await
        .map_err(|e| ActionError::Signal(e.to_string()))?;
    if let Err(errors) = checked {
        return Err(ActionError::BadConfig(errors.to_string()));
    }
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP)
        .map_err(|e| ActionError::Signal(e.to_string()))?;
    tracing::info!("admin: RELOAD requested");
    Ok(())
}
