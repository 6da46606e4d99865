//! Server TLS policies against an in-process TLS server: which certificates each SSLMode
//! accepts, the SSLRequest answers, and config errors.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{Config, PoolOverride, ServerTlsSettings, SslMode};

/// A CA and a server certificate it signed for `names`.
struct Pki {
    ca_pem: String,
    /// What the server sends: its certificate, then any intermediates.
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pki(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p
}

/// As RDS does it: root CA -> regional intermediate -> server. Returns the PKI whose `ca_pem`
/// is a bundle of an unrelated root, the root and the intermediate (like the RDS
/// global-bundle.pem), and the intermediate's PEM on its own.
fn rds_like_pki(names: &[&str], send_intermediate: bool) -> (Pki, String) {
    let unrelated =
        CertifiedIssuer::self_signed(ca_params("Unrelated Root"), KeyPair::generate().unwrap())
            .unwrap();
    let root =
        CertifiedIssuer::self_signed(ca_params("Test RDS Root CA"), KeyPair::generate().unwrap())
            .unwrap();
    let intermediate = CertifiedIssuer::signed_by(
        ca_params("Test RDS eu-west-1 CA"),
        KeyPair::generate().unwrap(),
        &root,
    )
    .unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &intermediate)
        .unwrap();
    let mut chain = vec![cert.der().clone()];
    if send_intermediate {
        chain.push(intermediate.der().clone());
    }
    let bundle = format!("{}{}{}", unrelated.pem(), root.pem(), intermediate.pem());
    (
        Pki {
            ca_pem: bundle,
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        },
        root.pem(),
    )
}

fn write_ca(dir: &Path, pki: &Pki) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).expect("write CA");
    path.display().to_string()
}

fn settings(mode: SslMode, root: &str) -> ServerTlsSettings {
    ServerTlsSettings {
        ssl_mode: mode,
        root_cert_file: root.to_owned(),
    }
}

/// Answers one SSLRequest with `answer`; on `S` serves TLS and echoes "pong" for "ping".
async fn fake_server(answer: u8, pki: Option<Pki>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut req = [0u8; 8];
        tcp.read_exact(&mut req).await.expect("SSLRequest");
        assert_eq!(req, SSL_REQUEST);
        tcp.write_all(&[answer]).await.expect("answer");
        let Some(pki) = pki.filter(|_| answer == b'S') else {
            return;
        };
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain, pki.key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let Ok(mut tls) = acceptor.accept(tcp).await else {
            return;
        };
        let mut ping = [0u8; 4];
        if tls.read_exact(&mut ping).await.is_ok() && &ping == b"ping" {
            let _ = tls.write_all(b"pong").await;
            let _ = tls.flush().await;
        }
        // Keep the session open a moment so the client can probe it while idle, then close.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = tls.shutdown().await;
    });
    addr
}

async fn secure(
    s: &ServerTlsSettings,
    host: &str,
    addr: SocketAddr,
) -> Result<ServerStream, TlsConnectError> {
    let tls = ServerTls::build(s, "ServerTLSSettings").expect("policy builds");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tls.secure(tcp, host, addr).await
}

async fn ping(stream: &mut ServerStream) {
    stream.write_all(b"ping").await.expect("write ping");
    stream.flush().await.expect("flush");
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await.expect("read pong");
    assert_eq!(&pong, b"pong");
}

#[tokio::test]
async fn verify_full_accepts_the_right_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&["localhost"]);
    let root = write_ca(dir.path(), &pki);
    let addr = fake_server(b'S', Some(pki)).await;
    let mut s = secure(&settings(SslMode::VerifyFull, &root), "localhost", addr)
        .await
        .expect("verify-full with the right CA and name");
    assert!(s.is_tls());
    ping(&mut s).await;
    assert!(s.idle_ok(), "an idle TLS session is usable");
    // The server closes after a moment: the idle probe must notice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.idle_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed session still looks idle-ok"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn verify_full_rejects_a_certificate_for_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&["db.example.internal"]);
    let root = write_ca(dir.path(), &pki);
    let addr = fake_server(b'S', Some(pki)).await;
    let err = secure(&settings(SslMode::VerifyFull, &root), "127.0.0.1", addr)
        .await
        .expect_err("name mismatch must fail");
    let text = err.to_string();
    assert!(err.is_handshake(), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    assert!(text.contains("verify-full"), "{text}");
}

#[tokio::test]
async fn verify_ca_ignores_the_name_but_not_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(&["db.example.internal"]);
    let root = write_ca(dir.path(), &good);
    let addr = fake_server(b'S', Some(good)).await;
    let mut s = secure(&settings(SslMode::VerifyCa, &root), "127.0.0.1", addr)
        .await
        .expect("verify-ca does not check the name");
    ping(&mut s).await;

    let other = pki(&["127.0.0.1"]);
    let addr = fake_server(b'S', Some(other)).await;
    let err = secure(&settings(SslMode::VerifyCa, &root), "127.0.0.1", addr)
        .await
        .expect_err("a chain to another CA must fail");
    // Both test CAs share rcgen's default subject, so webpki reports a bad signature rather
    // than an unknown issuer; either way the certificate is refused.
    assert!(err.is_handshake(), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn require_encrypts_without_checking_unless_given_a_root_file() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = pki(&["x"]);
    let root = write_ca(dir.path(), &trusted);
    let stranger = pki(&["y"]);
    let addr = fake_server(b'S', Some(stranger)).await;
    let mut s = secure(&settings(SslMode::Require, ""), "127.0.0.1", addr)
        .await
        .expect("require accepts any certificate");
    assert!(s.is_tls());
    ping(&mut s).await;

    // libpq: require with a root certificate file behaves as verify-ca.
    let stranger = pki(&["y"]);
    let addr = fake_server(b'S', Some(stranger)).await;
    let err = secure(&settings(SslMode::Require, &root), "127.0.0.1", addr)
        .await
        .expect_err("require with a root file verifies the chain");
    assert!(err.is_handshake());
}

#[tokio::test]
async fn a_server_without_tls_gets_plaintext_only_under_prefer() {
    let addr = fake_server(b'N', None).await;
    let s = secure(&settings(SslMode::Prefer, ""), "127.0.0.1", addr)
        .await
        .expect("prefer falls back");
    assert!(!s.is_tls());

    let addr = fake_server(b'N', None).await;
    let err = secure(&settings(SslMode::Require, ""), "127.0.0.1", addr)
        .await
        .expect_err("require refuses plaintext");
    assert!(matches!(err, TlsConnectError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("does not support TLS"), "{err}");

    let addr = fake_server(b'E', None).await;
    let err = secure(&settings(SslMode::Prefer, ""), "127.0.0.1", addr)
        .await
        .expect_err("an odd answer is an error");
    assert!(
        matches!(err, TlsConnectError::BadAnswer { byte: b'E', .. }),
        "{err}"
    );
}

#[test]
fn policies_that_cannot_be_built_say_why() {
    let err = ServerTls::build(&settings(SslMode::VerifyFull, ""), "ServerTLSSettings")
        .expect_err("verify-full needs a root file");
    assert!(err.to_string().contains("needs RootCertFile"), "{err}");

    let err = ServerTls::build(
        &settings(SslMode::VerifyCa, "/nonexistent/rds-ca.pem"),
        "ServerTLSSettings",
    )
    .expect_err("missing root file");
    assert!(err.to_string().contains("/nonexistent/rds-ca.pem"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let err = ServerTls::build(
        &settings(SslMode::VerifyFull, &empty.display().to_string()),
        "OverrideSettings[\"h/d\"]",
    )
    .expect_err("a file without certificates");
    assert!(matches!(err, ServerTlsError::NoRoots { .. }), "{err}");
    assert!(
        err.to_string().starts_with("OverrideSettings[\"h/d\"]"),
        "{err}"
    );

    // prefer and disable never read the file.
    for mode in [SslMode::Prefer, SslMode::Disable] {
        ServerTls::build(&settings(mode, "/nonexistent/ca.pem"), "ServerTLSSettings")
            .expect("not read");
    }
}

#[test]
fn overrides_pick_their_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_ca(dir.path(), &pki(&["x"]));
    let mut cfg = Config {
        server_tls: settings(SslMode::VerifyFull, &root),
        ..Config::default()
    };
    cfg.overrides.insert(
        "legacy:5433/app".into(),
        PoolOverride {
            ssl_mode: Some(SslMode::Disable),
            ..Default::default()
        },
    );
    cfg.overrides.insert(
        "other/app".into(),
        PoolOverride {
            max_open: Some(3),
            ..Default::default()
        },
    );
    let set = ServerTlsSet::from_config(&cfg).expect("builds");
    let legacy = set.for_dest(&cfg, "legacy:5433", "app").unwrap();
    assert_eq!(legacy.mode(), SslMode::Disable);
    // An override without TLS keys inherits ServerTLSSettings.
    let other = set.for_dest(&cfg, "other", "app").unwrap();
    assert_eq!(other.settings, cfg.server_tls);
    let plain = set.for_dest(&cfg, "rds.example", "app").unwrap();
    assert_eq!(plain.mode(), SslMode::VerifyFull);

    cfg.overrides.insert(
        "broken/app".into(),
        PoolOverride {
            root_cert_file: Some("/nonexistent/x.pem".into()),
            ..Default::default()
        },
    );
    let err = ServerTlsSet::from_config(&cfg).expect_err("a broken override root file");
    assert!(
        err.to_string().contains("OverrideSettings[\"broken/app\"]"),
        "{err}"
    );
}

#[tokio::test]
async fn verify_full_works_with_an_rds_style_bundle_and_chain() {
    let host = "mydb.abc123.eu-west-1.rds.amazonaws.com";
    for send_intermediate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (pki, root_only) = rds_like_pki(&[host], send_intermediate);
        let again = Pki {
            ca_pem: pki.ca_pem.clone(),
            chain: pki.chain.clone(),
            key: pki.key.clone_key(),
        };
        // The whole bundle trusted (roots and intermediates): fine whatever the server sends.
        let bundle = write_ca(dir.path(), &pki);
        let addr = fake_server(b'S', Some(pki)).await;
        let mut s = secure(&settings(SslMode::VerifyFull, &bundle), host, addr)
            .await
            .unwrap_or_else(|e| panic!("bundle, intermediate sent: {send_intermediate}: {e}"));
        ping(&mut s).await;

        // Only the root trusted: the chain is complete only if the server sends its
        // intermediate.
        let root_file = dir.path().join("root-only.pem");
        std::fs::write(&root_file, &root_only).unwrap();
        let addr = fake_server(b'S', Some(again)).await;
        let res = secure(
            &settings(SslMode::VerifyFull, &root_file.display().to_string()),
            host,
            addr,
        )
        .await;
        assert_eq!(
            res.is_ok(),
            send_intermediate,
            "root only, intermediate sent: {send_intermediate}: {:?}",
            res.err()
        );
    }
}
