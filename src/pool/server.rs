//! One raw server connection: connect, authenticate (SCRAM-SHA-256, MD5, cleartext), and run the
//! pooler's own short commands (SET search_path, client parameters) on it.

use crate::net::tcp::TcpOptions;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::destination::Destination;
use super::stream::ServerStream;
use super::tls::{ServerTls, TlsConnectError};
use crate::config::SslMode;
use crate::proto::backend::{parse_error_fields, parse_parameter_status};
use crate::proto::frame::{DEFAULT_MAX_MESSAGE_LEN, header};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out after {0:?} connecting to the server")]
    ConnectTimeout(Duration),
    #[error("server connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("server rejected the pooler: {code} {message}")]
    Rejected { code: String, message: String },
    #[error("server asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(&'static str),
    #[error("protocol error from server: {0}")]
    Protocol(String),
    #[error("timed out after {0:?} running {1}")]
    ExecTimeout(Duration, &'static str),
    #[error(transparent)]
    Tls(#[from] TlsConnectError),
}

/// A client's wanted session settings, shared between clients that want the same ones.
pub type FittedSettings = std::sync::Arc<std::collections::BTreeMap<String, String>>;

/// A PostgreSQL connection the pool owns, with what the pooler knows about its session.
#[derive(Debug)]
pub struct ServerConn {
    /// Plain TCP or TLS, as ServerTLSSettings and the server decided.
    pub stream: ServerStream,
    pub rbuf: BytesMut,
    /// The pooler's own commands (SET, RESET, reading settings back) are encoded here.
    wbuf: BytesMut,
    pub addr: SocketAddr,
    pub backend_pid: i32,
    pub backend_secret: i32,
    /// Current values (lower-case names) of parameters the server reports, plus those we SET.
    pub params: HashMap<String, String>,
    /// Settings we SET that the server does not report back, so they must be RESET for others.
    pub extra_settings: std::collections::BTreeSet<String>,
    /// The schema our last `SET search_path` installed; `None` when unknown.
    pub schema: Option<Arc<str>>,
    /// The client settings map (shared by every client with the same settings) this
    /// connection was last found to carry: a checkout by a client holding the same map needs
    /// no comparison. Anything that changes `params` or `extra_settings` clears it.
    pub fitted: Option<FittedSettings>,
    /// Server statements the pooler prepared here (named after their SQL and schema).
    pub prepared: super::prepared::PreparedSet,
    /// Set when the connection's state cannot be trusted; it is then closed, never reused.
    pub broken: bool,
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        // Best effort Terminate so the server logs a clean disconnect.
        self.stream.try_terminate();
    }
}

async fn read_message(
    stream: &mut ServerStream,
    buf: &mut BytesMut,
) -> Result<backend::Message, ServerError> {
    loop {
        if let Some(msg) = backend::Message::parse(buf)? {
            return Ok(msg);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

async fn open_tcp(
    dest: &Destination,
    tcp: &TcpOptions,
) -> Result<(TcpStream, SocketAddr), ServerError> {
    let target = format!("{}:{}", dest.host, dest.port);
    let stream = TcpStream::connect(&target)
        .await
        .map_err(|source| ServerError::Connect {
            addr: target.clone(),
            source,
        })?;
    crate::net::tcp::apply(socket2::SockRef::from(&stream), tcp)?;
    let addr = stream.peer_addr()?;
    Ok((stream, addr))
}

fn rejected(body: &backend::ErrorResponseBody) -> ServerError {
    use fallible_iterator::FallibleIterator;
    let (mut code, mut message) = (String::new(), String::new());
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    ServerError::Rejected { code, message }
}

impl ServerConn {
    /// Opens, secures (per `tls`) and authenticates a connection; the caller bounds it with
    /// ConnCreateTimeoutSecs.
    pub async fn connect(
        dest: &Destination,
        tls: &ServerTls,
        opts: &TcpOptions,
    ) -> Result<ServerConn, ServerError> {
        let prefer = tls.mode() == SslMode::Prefer;
        let (tcp, addr) = open_tcp(dest, opts).await?;
        let stream = match tls.secure(tcp, &dest.host, addr).await {
            Ok(s) => s,
            // libpq's prefer: a failed handshake is retried in plaintext.
            Err(e) if prefer && e.is_handshake() => {
                tracing::info!(host = %dest.host, error = %e, "TLS failed under SSLMode prefer; retrying without TLS");
                ServerStream::Plain(open_tcp(dest, opts).await?.0)
            }
            Err(e) => {
                tracing::warn!(host = %dest.host, port = dest.port, error = %e, "server TLS failed");
                return Err(e.into());
            }
        };
        let secured = stream.is_tls();
        match Self::authenticate(stream, addr, dest).await {
            // libpq's prefer also retries in plaintext when the server rejects the TLS login
            // (a pg_hba.conf with hostnossl rules only).
            Err(ServerError::Rejected { code, message }) if prefer && secured => {
                tracing::info!(host = %dest.host, %code, %message,
                    "login over TLS rejected under SSLMode prefer; retrying without TLS");
                let (tcp, addr) = open_tcp(dest, opts).await?;
                Self::authenticate(ServerStream::Plain(tcp), addr, dest).await
            }
            other => other,
        }
    }

    async fn authenticate(
        stream: ServerStream,
        addr: SocketAddr,
        dest: &Destination,
    ) -> Result<ServerConn, ServerError> {
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::new(),
            addr,
            backend_pid: 0,
            backend_secret: 0,
            params: HashMap::new(),
            extra_settings: Default::default(),
            schema: None,
            fitted: None,
            prepared: super::prepared::PreparedSet::new(200),
            broken: false,
        };
        conn.startup(dest).await?;
        Ok(conn)
    }

    async fn send(&mut self, buf: &[u8]) -> Result<(), ServerError> {
        self.stream.write_all(buf).await?;
        // TLS may hold the last record back until flushed.
        self.stream.flush().await?;
        Ok(())
    }

    async fn startup(&mut self, dest: &Destination) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        let params = [
            ("user", dest.user.as_str()),
            ("database", dest.db.as_str()),
            ("application_name", "perseus"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out)?;
        self.send(&out).await?;
        let password = dest.password.as_bytes();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = read_message(&mut self.stream, &mut self.rbuf).await?;
            out.clear();
            match msg {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut out)?;
                    self.send(&out).await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hashed = md5_hash(dest.user.as_bytes(), password, body.salt());
                    frontend::password_message(hashed.as_bytes(), &mut out)?;
                    self.send(&out).await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechs = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = fallible_iterator::FallibleIterator::next(&mut mechs)? {
                        found |= m == SCRAM_SHA_256;
                    }
                    if !found {
                        return Err(ServerError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    let s = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    self.send(&out).await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ServerError::Protocol("SASL continue before SASL start".into())
                    })?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                    self.send(&out).await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ServerError::Protocol("SASL final before SASL start".into())
                    })?;
                    s.finish(body.data())?;
                }
                backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationScmCredential
                | backend::Message::AuthenticationGss
                | backend::Message::AuthenticationSspi => {
                    return Err(ServerError::UnsupportedAuth("Kerberos/GSS/SSPI"));
                }
                backend::Message::ParameterStatus(body) => {
                    self.params
                        .insert(body.name()?.to_ascii_lowercase(), body.value()?.to_owned());
                }
                backend::Message::BackendKeyData(body) => {
                    self.backend_pid = body.process_id();
                    self.backend_secret = body.secret_key();
                }
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ErrorResponse(body) => return Err(rejected(&body)),
                backend::Message::NoticeResponse(_) => {}
                _ => {
                    return Err(ServerError::Protocol(
                        "unexpected message during startup".into(),
                    ));
                }
            }
        }
    }

    /// Runs the pooler's own simple-protocol command and waits for ReadyForQuery, keeping
    /// ParameterStatus changes. An error from the server fails the call and the connection.
    pub async fn exec(
        &mut self,
        sql: &str,
        what: &'static str,
        limit: Duration,
    ) -> Result<(), ServerError> {
        self.query_row(sql, what, limit).await.map(drop)
    }

    /// As [`ServerConn::exec`], returning the text values of the first row (NULL as None).
    pub async fn query_row(
        &mut self,
        sql: &str,
        what: &'static str,
        limit: Duration,
    ) -> Result<Vec<Option<String>>, ServerError> {
        let res = tokio::time::timeout(limit, self.exec_inner(sql)).await;
        let res = res.unwrap_or(Err(ServerError::ExecTimeout(limit, what)));
        if res.is_err() {
            self.broken = true;
        }
        res
    }

    async fn exec_inner(&mut self, sql: &str) -> Result<Vec<Option<String>>, ServerError> {
        // The connection's own buffer, kept between commands: a tenant switch allocates nothing.
        let mut out = std::mem::take(&mut self.wbuf);
        out.clear();
        frontend::query(sql, &mut out)?;
        let sent = self.send(&out).await;
        self.wbuf = out;
        sent?;
        let mut failure = None;
        let mut row = None;
        loop {
            let Some(h) = header(&self.rbuf, DEFAULT_MAX_MESSAGE_LEN)
                .map_err(|e| ServerError::Protocol(e.to_string()))?
            else {
                if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                    return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                continue;
            };
            if self.rbuf.len() < h.frame_len {
                if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                    return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                continue;
            }
            if h.tag == b'S' {
                let frame = self.rbuf.split_to(h.frame_len);
                self.note_parameter(&frame[5..]);
                continue;
            }
            // Read in place and then skipped: splitting the frame off would allocate.
            let body = &self.rbuf[5..h.frame_len];
            let idle = match h.tag {
                b'D' if row.is_none() => {
                    row = Some(data_row(body)?);
                    None
                }
                b'E' => {
                    let (code, message) = parse_error_fields(body);
                    failure = Some(ServerError::Rejected { code, message });
                    None
                }
                b'Z' => Some(body.first() == Some(&b'I')),
                _ => None,
            };
            self.rbuf.advance(h.frame_len);
            if let Some(idle) = idle {
                return match failure {
                    Some(e) => Err(e),
                    None if idle => Ok(row.unwrap_or_default()),
                    None => Err(ServerError::Protocol(
                        "pooler command left a transaction open".into(),
                    )),
                };
            }
        }
    }

    /// Records a ParameterStatus body; returns the (name, value) for callers that track clients.
    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((name, value)) = parse_parameter_status(body) {
            self.fitted = None;
            self.params
                .insert(name.to_ascii_lowercase(), value.to_owned());
        }
    }

    /// Whether the socket still looks usable while idle: no EOF and no unsolicited bytes.
    pub fn idle_check(&mut self) -> bool {
        if self.broken || !self.rbuf.is_empty() {
            return false;
        }
        self.stream.idle_ok()
    }

    /// Drops bytes already consumed from the read buffer (kept for symmetry with framing code).
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }
}

/// Text values of a DataRow body.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, ServerError> {
    let bad = || ServerError::Protocol("malformed DataRow".into());
    let count = u16::from_be_bytes(
        body.get(..2)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let mut rest = &body[2..];
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = i32::from_be_bytes(
            rest.get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
            continue;
        }
        let v = rest.get(..len as usize).ok_or_else(bad)?;
        values.push(Some(String::from_utf8_lossy(v).into_owned()));
        rest = &rest[len as usize..];
    }
    Ok(values)
}
