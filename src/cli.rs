//! The `perseus` daemon's command line: flags (Go's single-dash spellings too), `--check`,
//! `--migrate`, logging setup, and the hand-off to [`crate::app::run`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::config::{self, Config, LogSettings};

/// Where the Go daemon looked by default; kept so existing deployments need no new flag.
pub const DEFAULT_CONFIG: &str = "config/config.json";

/// Long flags that Go's `flag` package lets users write with one dash (`-config x`).
const LONG_FLAGS: &[&str] = &["config", "check", "migrate", "help", "version"];
/// Of those, the ones that take a value, so the value itself is never rewritten.
const VALUE_FLAGS: &[&str] = &["config"];

/// Tenant-routing PostgreSQL connection pooler (drop-in for the Go Perseus).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "perseus", version, about)]
pub struct Args {
    /// Configuration file (same keys as the Go Perseus); PERSEUS_* variables override it.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Validate the configuration, print it with secrets hidden, and exit (0 when valid).
    #[arg(long, conflicts_with = "migrate")]
    pub check: bool,
    /// Create the perseus_auth table in the auth DB (AuthDBDSN) if missing, and exit.
    #[arg(long)]
    pub migrate: bool,
}

/// Rewrites Go-style `-config PATH`, `-config=PATH`, `-check`, ... into `--config ...` for clap.
/// Arguments after `--` and the value of a value-taking flag are left alone.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut iter = args.into_iter().map(Into::into);
    let mut out: Vec<OsString> = iter.next().into_iter().collect();
    let mut literal = false;
    let mut value_next = false;
    for arg in iter {
        if literal || std::mem::take(&mut value_next) {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            literal = true;
            out.push(arg);
            continue;
        }
        let (body, single) = match (s.strip_prefix("--"), s.strip_prefix('-')) {
            (Some(body), _) => (body, false),
            (None, Some(body)) => (body, true),
            _ => {
                out.push(arg);
                continue;
            }
        };
        let name = body.split_once('=').map_or(body, |(n, _)| n);
        if !LONG_FLAGS.contains(&name) {
            out.push(arg);
            continue;
        }
        value_next = VALUE_FLAGS.contains(&name) && !body.contains('=');
        out.push(if single { format!("-{s}").into() } else { arg });
    }
    out
}

/// Entry point of the binary: parses `std::env::args_os()` and runs.
pub fn main() -> ExitCode {
    run(Args::parse_from(normalize_args(std::env::args_os())))
}

/// Loads the configuration and does what `args` ask. Exit status: 0 success, 1 failure,
/// 2 command-line usage error (from clap).
pub fn run(args: Args) -> ExitCode {
    let path = args.config.display().to_string();
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("perseus: {path}: {errors}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        return check(&path, &config);
    }
    if args.migrate {
        return migrate(&config);
    }
    serve(args.config, config)
}

fn check(path: &str, config: &Config) -> ExitCode {
    // Certificate files must be readable too, not only named.
    if let Err(e) = crate::pool::tls::ServerTlsSet::from_config(config) {
        eprintln!("perseus: {path}: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = crate::net::ClientTls::new(&config.tls) {
        eprintln!("perseus: {path}: {e}");
        return ExitCode::FAILURE;
    }
    for var in config::unknown_env_vars(config::process_env().0) {
        eprintln!("perseus: note: {var} matches no configuration key and is ignored");
    }
    println!("{}", config.redacted_json());
    eprintln!("perseus: {path}: configuration is valid");
    ExitCode::SUCCESS
}

fn migrate(config: &Config) -> ExitCode {
    let (pg, params) = match config.auth_db.parse_dsn() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("perseus: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match crate::net::auth_db_tls::auth_db_connector(&params.tls) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("perseus: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("perseus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let result = runtime.block_on(crate::migrate::apply_with_config(&pg, tls, timeout));
    match result {
        Ok(applied) => {
            eprintln!(
                "perseus: migrations applied to {}: {}",
                config.auth_db.redacted_dsn(),
                applied.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("perseus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf, config: Config) -> ExitCode {
    let log_level = match init_tracing(&config.log) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("perseus: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime_for(config.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("perseus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::app::run(path, config, Some(log_level))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perseus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime `WorkerThreads` asks for. One thread gets tokio's single-threaded
/// scheduler rather than a one-worker pool: every task, and the I/O driver, stay on one
/// thread, so a socket's wake-up never has to hand its task to another thread (no futex,
/// fewer context switches). Blocking work (scrypt) still runs on the blocking pool.
fn runtime_for(worker_threads: u32) -> std::io::Result<tokio::runtime::Runtime> {
    let (mut builder, name) = match worker_threads {
        1 => (
            tokio::runtime::Builder::new_current_thread(),
            "perseus-blocking",
        ),
        _ => (
            tokio::runtime::Builder::new_multi_thread(),
            "perseus-worker",
        ),
    };
    builder.enable_all().thread_name(name);
    if worker_threads > 1 {
        builder.worker_threads(worker_threads as usize);
    }
    builder.build()
}

/// Changes the log level of the running daemon (SIGHUP).
pub type LogLevelHandle = tracing_subscriber::reload::Handle<
    tracing_subscriber::filter::LevelFilter,
    tracing_subscriber::Registry,
>;

/// Installs the global tracing subscriber on stderr: JSON lines when `Json` is set, else
/// human-readable, at the level `Level` names; the level can be changed later.
pub fn init_tracing(log: &LogSettings) -> Result<LogLevelHandle, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = log.tracing_level()?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::filter::LevelFilter::from_level(level),
    );
    // Colour codes only for a person at a terminal: journald, Docker and log files get plain
    // text that grep and log shippers read as written.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if log.json {
        registry.with(fmt.json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    installed.map_err(|e| e.to_string())?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().copied())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        assert_eq!(
            norm(&["p", "-config", "x.json"]),
            ["p", "--config", "x.json"]
        );
        assert_eq!(
            norm(&["p", "-config=x.json", "-check"]),
            ["p", "--config=x.json", "--check"]
        );
        assert_eq!(
            norm(&["p", "-migrate", "-help", "-version"]),
            ["p", "--migrate", "--help", "--version"]
        );
    }

    #[test]
    fn values_short_flags_and_literals_are_untouched() {
        assert_eq!(
            norm(&["p", "-config", "-check"]),
            ["p", "--config", "-check"]
        );
        assert_eq!(
            norm(&["p", "-h", "-V", "--check"]),
            ["p", "-h", "-V", "--check"]
        );
        assert_eq!(norm(&["p", "--", "-check"]), ["p", "--", "-check"]);
        assert_eq!(norm(&["p", "-bogus"]), ["p", "-bogus"]);
    }

    #[test]
    fn parses_into_args() {
        let a = Args::try_parse_from(normalize_args(["p", "-config", "c.json", "-check"])).unwrap();
        assert_eq!(a.config, PathBuf::from("c.json"));
        assert!(a.check && !a.migrate);
        let d = Args::try_parse_from(["p"]).unwrap();
        assert_eq!(d.config, PathBuf::from(DEFAULT_CONFIG));
        assert!(Args::try_parse_from(["p", "--check", "--migrate"]).is_err());
    }
}
