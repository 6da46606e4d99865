//! Configuration: the Go Perseus `config.json` keys, loaded, overridden from the environment and validated.

mod addr;
mod document;
mod dsn;
mod dsn_split;
mod duration;
mod env;
mod error;
mod redact;
mod schema;
mod types;
mod validate;

use std::path::Path;

pub use addr::resolve as resolve_listen_address;
pub use dsn::{AuthPoolParams, DsnTls, TlsVerify};
pub use duration::parse_go_duration;
pub use env::{env_var_names, unknown_env_vars};
pub use error::{ConfigError, ConfigErrors};
pub use types::*;
pub use validate::MAX_SECS;

/// Loads `path`, applies `PERSEUS_*` variables from the process environment, and validates.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let (env, mut errors) = process_env();
    match load_with_env(path, env) {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// [`load`] with the environment given as `(name, value)` pairs, so tests need not touch the
/// process environment.
pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text, env)
}

/// Parses config text, applies the environment overrides and validates; every problem found
/// (unknown keys, mistyped values, bad variables, broken rules) is returned together.
pub fn parse<I, K, V>(text: &str, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut errors = Vec::new();
    let mut doc = document::clean(text, &mut errors);
    env::apply(&mut doc, env, &mut errors);
    let syntax_failed = errors
        .iter()
        .any(|e| matches!(e, ConfigError::Syntax { .. }));
    if syntax_failed {
        return Err(ConfigErrors(errors));
    }
    match document::into_config(doc) {
        Ok(config) => {
            errors.extend(config.problems());
            if errors.is_empty() {
                Ok(config)
            } else {
                Err(ConfigErrors(errors))
            }
        }
        Err(e) => {
            errors.push(e);
            Err(ConfigErrors(errors))
        }
    }
}

/// The `PERSEUS_*` variables of this process; a value that is not UTF-8 is a problem, not a skip.
pub fn process_env() -> (Vec<(String, String)>, Vec<ConfigError>) {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str().filter(|k| k.starts_with("PERSEUS_")) else {
            continue;
        };
        match v.into_string() {
            Ok(v) => vars.push((k.to_string(), v)),
            Err(_) => errors.push(ConfigError::Env {
                var: k.to_string(),
                reason: "the value is not valid UTF-8".into(),
            }),
        }
    }
    (vars, errors)
}
