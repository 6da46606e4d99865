//! encpass against a real KMS emulator (moto_server): what encpass prints, the
//! library's `Kms::decrypt` turns back into the password.
//!
//! One test function shares one moto_server (it takes seconds to start).

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use perseus::config::AwsSettings;
use perseus::secrets::kms::Kms;

const REGION: &str = "us-east-1";
const INSTALL: &str =
    "install moto into the repo: python3 -m venv .venv && .venv/bin/pip install 'moto[server]'";

/// A moto_server child on a free loopback port, killed by pid when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let exe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
        assert!(exe.is_file(), "{} is missing: {INSTALL}", exe.display());
        // Another process may take the free port before moto binds it: retry a few times.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("find a free port")
                .port();
            let child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}; {INSTALL}", exe.display()));
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            match moto.wait_ready(port, Duration::from_secs(30)) {
                Ok(()) => return moto,
                Err(e) => last_error = e,
            }
        }
        panic!("moto_server did not come up: {last_error}");
    }

    /// Polls the port until it accepts, moto exits, or the deadline passes.
    fn wait_ready(&mut self, port: u16, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited with {status}"));
            }
            let addr = (Ipv4Addr::LOCALHOST, port).into();
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50)); // poll interval
        }
        Err(format!("port {port} not answering after {limit:?}"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create_key(endpoint: &str) -> String {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    let key = aws_sdk_kms::Client::from_conf(config)
        .create_key()
        .send()
        .await;
    let key = key.unwrap_or_else(|e| panic!("CreateKey on moto: {e:?}"));
    key.key_metadata()
        .and_then(|m| m.arn())
        .expect("CreateKey returns an ARN")
        .to_owned()
}

/// Runs encpass with AWS_* taken from `env` only (none inherited from the caller).
fn encpass(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_encpass"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AWS_")) {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start encpass");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    if let Err(e) = pipe.write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    drop(pipe);
    child.wait_with_output().expect("encpass finishes")
}

/// The single base64 line encpass printed, after checking it succeeded quietly.
fn ciphertext(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "encpass failed: {stderr}"
    );
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let line = stdout
        .strip_suffix('\n')
        .expect("output ends with a newline");
    assert!(
        !line.is_empty() && !line.contains(['\n', ' ']),
        "stdout: {stdout:?}"
    );
    line.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encpass_output_decrypts_to_the_password() {
    let moto = Moto::start();
    let key_arn = create_key(&moto.endpoint).await;
    let ep = moto.endpoint.as_str();
    let kms = Kms::try_new(&AwsSettings {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        region: REGION.into(),
        endpoint: moto.endpoint.clone(),
        kms_key_arn: String::new(),
    })
    .await
    .expect("library KMS client");
    let keys = ["-access_key_id", "testing", "-secret_access_key", "testing"];

    let go_style = [
        &keys[..],
        &["-region", REGION, "-endpoint", ep, "-key_arn", &key_arn],
    ]
    .concat();
    let gnu_style = [
        "--access_key_id=testing".to_owned(),
        "--secret_access_key=testing".to_owned(),
        format!("--region={REGION}"),
        format!("--endpoint={ep}"),
        format!("--key_arn={key_arn}"),
    ];
    let gnu_style: Vec<&str> = gnu_style.iter().map(String::as_str).collect();
    for (style, base) in [("go", &go_style), ("gnu", &gnu_style)] {
        let args = [&base[..], &["-passwd", "dëst pass"]].concat();
        let blob = ciphertext(&encpass(&args, &[], b""));
        assert_eq!(
            kms.decrypt(&blob).await.unwrap(),
            "dëst pass",
            "{style} flags"
        );

        let args = [&base[..], &["--passwd-stdin"]].concat();
        let blob = ciphertext(&encpass(&args, &[], b"from stdin\r\n"));
        assert_eq!(
            kms.decrypt(&blob).await.unwrap(),
            "from stdin",
            "{style} stdin"
        );
    }

    // No key flags: the default chain finds the keys and region in the environment.
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
    ];
    let out = encpass(
        &["-endpoint", ep, "-key_arn", &key_arn, "-passwd", "chain"],
        &env,
        b"",
    );
    assert_eq!(kms.decrypt(&ciphertext(&out)).await.unwrap(), "chain");

    // Failures go to stderr with a non-zero status and never show the password.
    let unknown_key = format!("{}-nope", key_arn);
    let bad = [
        &keys[..],
        &["-region", REGION, "-endpoint", ep, "-key_arn", &unknown_key],
    ]
    .concat();
    let missing = [&keys[..], &["-region", REGION, "-endpoint", ep]].concat();
    for (args, expect) in [(&bad, "Encrypt"), (&missing, "no KMS key")] {
        let args = [&args[..], &["-passwd", "hunter2-secret"]].concat();
        let out = encpass(&args, &[], b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(expect), "stderr lacks {expect:?}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "stderr shows the password: {stderr}"
        );
    }

    // A blob damaged in transit does not decrypt.
    let blob = ciphertext(&encpass(
        &[&go_style[..], &["-passwd", "x"]].concat(),
        &[],
        b"",
    ));
    assert!(kms.decrypt(&blob[..blob.len() / 2]).await.is_err());
    drop(moto);
}
