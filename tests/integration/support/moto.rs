//! A KMS emulator: `moto_server` (PyPI `moto[server]`) on a free loopback port, with a key
//! made for the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_kms::config::{Credentials, Region};
use perseus::config::AwsSettings;

use super::proc::{Watchdog, wait_timeout};
use super::{free_port, log_tail, poll, port_accepts, repo_root};

pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

const MISSING: &str = "moto_server not found: run scripts/test.sh (it installs moto[server] into .venv) or pip install 'moto[server]'";

pub struct Moto {
    child: Child,
    watchdog: Option<Watchdog>,
    dir: PathBuf,
    port: u16,
    key_arn: String,
}

impl Moto {
    /// Starts moto_server, waits until it answers and creates a KMS key.
    pub fn start() -> Moto {
        let exe = executable();
        // The free port may be taken by someone else before moto binds it.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let failure = match Moto::spawn(&exe) {
                Ok(mut moto) => match try_create_key(&moto.endpoint()) {
                    Ok(arn) => {
                        moto.key_arn = arn;
                        return moto;
                    }
                    // What answered may not have been this moto: another test's server can
                    // hold the port, and moto does not always exit for it. CI saw another
                    // test's Perseus metrics endpoint answer CreateKey with a 404 while moto
                    // logged that it was running on the same port. Another port settles it.
                    Err(e) => moto.create_key_failure(&e),
                },
                Err(f) => f,
            };
            match failure {
                Failure { port_taken, .. } if port_taken && attempt < ATTEMPTS => continue,
                Failure { log, .. } => panic!("{log}"),
            }
        }
        unreachable!("the loop returns or panics on its last attempt")
    }

    /// One attempt on one free port: ready, or the reason with moto's log.
    fn spawn(exe: &Path) -> Result<Moto, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("perseus-moto-")
            .tempdir()
            .expect("create a temp dir for moto")
            .keep();
        let log_path = dir.join("moto.log");
        let log = std::fs::File::create(&log_path).expect("create moto.log");
        let port = free_port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let watchdog = Watchdog::spawn(
            &["kill".into(), "-KILL".into(), child.id().to_string().into()],
            Some(&dir),
        );
        let mut moto = Moto {
            child,
            watchdog: Some(watchdog),
            dir,
            port,
            key_arn: String::new(),
        };
        // Python start-up takes a second or two; a slow CI machine gets more.
        let ready = poll(Duration::from_secs(60), Duration::from_millis(50), || {
            if port_accepts(port) {
                Some(true)
            } else if moto.child.try_wait().ok().flatten().is_some() {
                Some(false)
            } else {
                None
            }
        });
        match ready {
            Some(true) => Ok(moto),
            Some(false) => {
                let log = log_tail(&log_path, 30);
                Err(Failure {
                    port_taken: log.contains("Address already in use"),
                    log: format!("moto_server exited before answering on port {port}:\n{log}"),
                })
            }
            None => Err(Failure {
                port_taken: false,
                log: format!(
                    "moto_server did not answer on port {port} within 60 s:\n{}",
                    log_tail(&log_path, 30)
                ),
            }),
        }
    }

    /// Why CreateKey failed (`error`), with moto's log. Always worth another port: a port
    /// collision shows either as moto exiting with "Address already in use" or as an answer
    /// from someone else's server, and a fault of moto itself fails again on the next port
    /// and is reported with the last attempt.
    fn create_key_failure(&self, error: &str) -> Failure {
        Failure {
            port_taken: true,
            log: format!(
                "KMS CreateKey on port {}: {error}\n{}",
                self.port,
                log_tail(&self.dir.join("moto.log"), 30)
            ),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The ARN of the key made at start-up.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// `AWSSettings` pointing at this emulator and its key, as a Perseus config wants them.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
            region: REGION.into(),
            endpoint: self.endpoint(),
            kms_key_arn: self.key_arn.clone(),
        }
    }

    /// A raw aws-sdk-kms client for this emulator (for tests that check the library's
    /// results independently of it).
    pub fn client(&self) -> aws_sdk_kms::Client {
        client(&self.endpoint())
    }

    /// Makes another key and returns its ARN.
    pub fn create_key(&self) -> String {
        create_key(&self.endpoint())
    }

    /// Kills the server and reaps it, leaving the directory in place.
    fn stand_down(&mut self) {
        // Disarm first: once the child is reaped its pid may be reused.
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
        let _ = self.child.kill();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- moto_server log (port {}), last lines ---\n{}",
                self.port,
                log_tail(&self.dir.join("moto.log"), 20)
            );
        }
        self.stand_down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Failure {
    log: String,
    port_taken: bool,
}

/// `PERSEUS_MOTO_SERVER`, else the repository's `.venv/bin/moto_server`.
fn executable() -> PathBuf {
    let exe = std::env::var_os("PERSEUS_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/moto_server"));
    assert!(exe.is_file(), "{MISSING} (looked for {})", exe.display());
    exe
}

/// An aws-sdk-kms client with static test credentials and the rustls/ring HTTP client
/// (the SDK is built without a default one).
pub fn client(endpoint: &str) -> aws_sdk_kms::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "perseus-tests",
        ))
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .http_client(http)
        .timeout_config(
            aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// CreateKey on a thread of its own, so it works whether or not the caller is inside a
/// tokio runtime (fixtures are created from sync and async tests alike).
fn create_key(endpoint: &str) -> String {
    try_create_key(endpoint).unwrap_or_else(|e| panic!("KMS CreateKey on {endpoint}: {e}"))
}

/// [`create_key`], with the error as text.
fn try_create_key(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a runtime for CreateKey");
        rt.block_on(async {
            let out = client(&endpoint)
                .create_key()
                .description("perseus tests")
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok(out
                .key_metadata()
                .and_then(|m| m.arn())
                .expect("CreateKey returns an ARN")
                .to_string())
        })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
