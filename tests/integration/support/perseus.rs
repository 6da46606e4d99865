//! The `perseus` daemon as a child process: a generated config file, free ports, readiness
//! by polling the listener, its output kept in a file for diagnostics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use perseus::config::Config;
use serde_json::Value;

use super::moto::Moto;
use super::pg::PgCluster;
use super::proc::{Watchdog, send_signal, wait_timeout};
use super::{free_port_pair, log_tail, poll, port_accepts};

/// How long the daemon may take to open its listener.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon binary built for this test run.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_perseus")
}

/// A config for a daemon whose auth DB is `auth_db` on `pg` and whose KMS is `moto`.
/// Listen and metrics addresses are filled in by [`Perseus::start`].
pub fn config(pg: &PgCluster, auth_db: &str, moto: &Moto) -> Config {
    let mut config = Config::default();
    config.auth_db.dsn = format!("{}?sslmode=disable", pg.dsn_for(auth_db));
    config.aws = moto.aws_settings();
    config
}

/// The daemon's command with the test environment's PERSEUS_* variables removed, so only
/// the config file (and what a test sets itself) configures it.
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PERSEUS_") {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `perseus --config <file with config_json> <args>` to completion (`--migrate`,
/// `--check`, ...).
pub fn run(config_json: &Value, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir for a config file");
    let path = dir.path().join("config.json");
    write_json(&path, config_json);
    command()
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .expect("run the perseus binary")
}

pub struct Perseus {
    child: Child,
    watchdog: Option<Watchdog>,
    dir: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
    config: Value,
}

impl Perseus {
    /// Starts the daemon with `config` on free ports; panics with its log if it does not
    /// come up.
    pub fn start(config: &Config) -> Perseus {
        Perseus::try_start(config).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(config: &Config) -> Result<Perseus, String> {
        Perseus::try_start_json(serde_json::to_value(config).expect("Config serialises"))
    }

    /// Like [`Perseus::try_start`] for a hand-written config document (any keys). The
    /// listen and metrics addresses are overwritten with free loopback ports. The error
    /// carries the daemon's exit status and log.
    pub fn try_start_json(config: Value) -> Result<Perseus, String> {
        // The free ports may be taken by someone else before the daemon binds them.
        const ATTEMPTS: usize = 5;
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Perseus::spawn(config.clone(), None) {
                Ok(p) => return Ok(p),
                Err((log, port_taken)) => {
                    if !port_taken {
                        return Err(log);
                    }
                    last = log;
                }
            }
        }
        Err(last)
    }

    /// Starts a second daemon with `config` on `other`'s client and metrics ports, as an
    /// operator restarting with `ListenReusePort` does. The error carries its log.
    pub fn try_start_beside(config: &Config, other: &Perseus) -> Result<Perseus, String> {
        let json = serde_json::to_value(config).expect("Config serialises");
        Perseus::spawn(json, Some((other.port, other.metrics_port))).map_err(|(log, _)| log)
    }

    /// Starts the daemon on `ports` (client, metrics), or on free ones.
    fn spawn(mut config: Value, ports: Option<(u16, u16)>) -> Result<Perseus, (String, bool)> {
        // A port picked twice would fail the config check (metrics on the listen port).
        let (port, metrics_port) = ports.unwrap_or_else(free_port_pair);
        config["ListenAddress"] = format!("127.0.0.1:{port}").into();
        config["MetricsAddress"] = format!("127.0.0.1:{metrics_port}").into();
        let dir = tempfile::Builder::new()
            .prefix("perseus-daemon-")
            .tempdir()
            .expect("temp dir for the daemon");
        write_json(&dir.path().join("config.json"), &config);
        let log =
            std::fs::File::create(dir.path().join("perseus.log")).expect("create perseus.log");
        let child = command()
            .arg("--config")
            .arg(dir.path().join("config.json"))
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start the perseus binary");
        let watchdog = Watchdog::spawn(
            &["kill".into(), "-KILL".into(), child.id().to_string().into()],
            None,
        );
        let mut daemon = Perseus {
            child,
            watchdog: Some(watchdog),
            dir,
            port,
            metrics_port,
            config,
        };
        let listening = poll(START_TIMEOUT, Duration::from_millis(20), || {
            // A port shared with a running daemon answers already: this one is up once it
            // says so.
            let up = match ports {
                None => port_accepts(port),
                Some(_) => daemon.log().contains("listening"),
            };
            if up {
                Some(true)
            } else if daemon.child.try_wait().ok().flatten().is_some() {
                Some(false)
            } else {
                None
            }
        });
        match listening {
            Some(true) => Ok(daemon),
            Some(false) => {
                let status = daemon.child.try_wait().ok().flatten();
                let log = daemon.log();
                let taken = log.contains("in use");
                Err((
                    format!(
                        "perseus exited ({}) before listening on 127.0.0.1:{port}; its output:\n{log}",
                        status.map_or("status unknown".into(), |s| s.to_string())
                    ),
                    taken,
                ))
            }
            None => Err((
                format!(
                    "perseus did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}; its output:\n{}",
                    daemon.log()
                ),
                false,
            )),
        }
    }

    /// The client port (ListenAddress).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Prometheus/health port (MetricsAddress).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// The config document as written (with the real listen addresses).
    pub fn config_json(&self) -> &Value {
        &self.config
    }

    /// Rewrites the config file, keeping this daemon's addresses; follow with SIGHUP.
    pub fn rewrite_config(&mut self, config: &Config) {
        let mut json = serde_json::to_value(config).expect("Config serialises");
        json["ListenAddress"] = self.config["ListenAddress"].clone();
        json["MetricsAddress"] = self.config["MetricsAddress"].clone();
        write_json(&self.config_path(), &json);
        self.config = json;
    }

    /// Sends `signal` (`libc::SIGHUP`, `libc::SIGTERM`, ...) to the daemon.
    pub fn send_signal(&self, signal: i32) {
        send_signal(self.pid(), signal)
            .unwrap_or_else(|e| panic!("signal {signal} to perseus pid {}: {e}", self.pid()));
    }

    /// Waits at most `timeout` for the daemon to exit; None when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(&mut self.child, timeout)?;
        // The pid is free for reuse now: the watchdog must not signal it any more.
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
        Some(status)
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("perseus.log")
    }
}

impl Drop for Perseus {
    fn drop(&mut self) {
        // Disarm first: once the child is reaped its pid may be reused.
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
        let _ = self.child.kill();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!(
                "--- perseus output (port {}), last lines ---\n{}",
                self.port,
                log_tail(&self.log_path(), 60)
            );
        }
    }
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON serialises");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
