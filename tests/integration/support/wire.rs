//! A bare PostgreSQL wire client for what libpq-style clients never send: startup packets
//! with missing or extra parameters, encryption requests, cancel requests with made-up keys,
//! FunctionCall, and extended-protocol batches in a chosen order.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read may take before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One backend message: its type byte and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The fields of an ErrorResponse or NoticeResponse, keyed by field type.
    pub fn fields(&self) -> HashMap<u8, String> {
        let mut out = HashMap::new();
        let mut rest = &self.body[..];
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            out.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        out
    }

    /// SQLSTATE of an ErrorResponse.
    pub fn code(&self) -> String {
        self.fields().remove(&b'C').unwrap_or_default()
    }

    pub fn message(&self) -> String {
        self.fields().remove(&b'M').unwrap_or_default()
    }

    /// The text columns of a DataRow (None for NULL).
    pub fn data_row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let b = &self.body;
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut cols = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
            at += 4;
            if len < 0 {
                cols.push(None);
            } else {
                let len = len as usize;
                cols.push(Some(String::from_utf8_lossy(&b[at..at + len]).into_owned()));
                at += len;
            }
        }
        cols
    }
}

/// The BackendKeyData a login returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub pid: i32,
    pub secret: i32,
}

pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    pub async fn connect(port: u16) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        Wire {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to perseus");
    }

    /// Reads exactly one byte (the answer to an SSLRequest or GSSENCRequest).
    pub async fn read_byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() && !self.fill().await {
            return None;
        }
        let b = self.buf[0];
        let _ = self.buf.split_to(1);
        Some(b)
    }

    /// Reads more bytes; false at end of stream (or a reset, which is an end too).
    async fn fill(&mut self) -> bool {
        match tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
            Err(_) => panic!("no answer from perseus within {READ_TIMEOUT:?}"),
        }
    }

    /// The next backend message; None at end of stream.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
                assert!(len >= 4, "bad message length {len}");
                if self.buf.len() > len {
                    let frame = self.buf.split_to(1 + len);
                    return Some(Msg {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    });
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Messages up to and including the next ReadyForQuery (or up to the end of stream).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// True when the peer has closed the connection (after any pending messages).
    pub async fn closed(&mut self) -> bool {
        while self.recv().await.is_some() {}
        true
    }

    pub async fn startup(&mut self, params: &[(&str, &str)]) {
        let mut buf = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf).expect("encode startup");
        self.send(&buf).await;
    }

    pub async fn password(&mut self, password: &str) {
        let mut buf = BytesMut::new();
        frontend::password_message(password.as_bytes(), &mut buf).expect("encode password");
        self.send(&buf).await;
    }

    /// Sends a startup packet and, when asked for one, the cleartext password. Returns the
    /// key on success, or the ErrorResponse that refused the login.
    pub async fn login(&mut self, params: &[(&str, &str)], password: &str) -> Result<Key, Msg> {
        self.login_reported(params, password)
            .await
            .map(|(key, _)| key)
    }

    /// [`Wire::login`], also returning the parameters the welcome reported (ParameterStatus),
    /// by name.
    pub async fn login_reported(
        &mut self,
        params: &[(&str, &str)],
        password: &str,
    ) -> Result<(Key, HashMap<String, String>), Msg> {
        self.startup(params).await;
        let mut reported = HashMap::new();
        let mut key = None;
        loop {
            let m = self
                .recv()
                .await
                .expect("perseus closed the connection during login without an ErrorResponse");
            match m.tag {
                b'R' => {
                    let code = i32::from_be_bytes(m.body[..4].try_into().expect("4 bytes"));
                    match code {
                        3 => self.password(password).await,
                        0 => {}
                        other => panic!("unexpected authentication request {other}"),
                    }
                }
                b'K' => {
                    key = Some(Key {
                        pid: i32::from_be_bytes(m.body[..4].try_into().expect("4 bytes")),
                        secret: i32::from_be_bytes(m.body[4..8].try_into().expect("4 bytes")),
                    })
                }
                b'S' => {
                    let mut parts = m.body.split(|&b| b == 0);
                    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let (name, value) = (next().into_owned(), next().into_owned());
                    reported.insert(name, value);
                }
                b'E' => return Err(m),
                b'Z' => {
                    let key = key.expect("BackendKeyData before ReadyForQuery");
                    return Ok((key, reported));
                }
                _ => {}
            }
        }
    }

    /// Logs in as tenant `t` (schema from `schema_search_path`); panics when refused.
    pub async fn login_tenant(&mut self, t: &super::TenantSpec) -> Key {
        let params = [
            ("user", t.source_user.as_str()),
            ("database", t.source_db.as_str()),
            ("schema_search_path", t.source_schema.as_str()),
        ];
        self.login(&params, &t.password)
            .await
            .unwrap_or_else(|e| panic!("login as {}: {}", t.source_user, e.message()))
    }

    /// Sends a simple Query and returns everything up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).expect("encode query");
        self.send(&buf).await;
        self.until_ready().await
    }
}

/// A CancelRequest packet for `key`.
pub fn cancel_request(key: Key) -> BytesMut {
    let mut buf = BytesMut::new();
    frontend::cancel_request(key.pid, key.secret, &mut buf);
    buf
}

/// An SSLRequest (`ssl`) or GSSENCRequest packet.
pub fn encryption_request(ssl: bool) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i32(8);
    buf.put_i32(if ssl { 80877103 } else { 80877104 });
    buf
}

/// A StartupMessage with an arbitrary protocol version.
pub fn startup_with_version(version: i32, params: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(version);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut buf = BytesMut::new();
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(&body);
    buf
}

/// A FunctionCall ('F') of the function `oid` with no arguments, text result.
pub fn function_call(oid: u32) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32(oid);
    body.put_i16(0); // argument format codes
    body.put_i16(0); // arguments
    body.put_i16(0); // result format: text
    let mut buf = BytesMut::new();
    buf.put_u8(b'F');
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(&body);
    buf
}

/// The tags of `msgs`, as a string ("1C2DCZ"), for compact assertions.
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}
