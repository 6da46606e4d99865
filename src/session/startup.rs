//! The first exchange with a client: negotiate away SSL/GSS encryption requests, serve cancel
//! requests, and read the StartupMessage and the cleartext password.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClientError;
use crate::proto::frame::header;
use crate::proto::startup::{self, StartupPacket, StartupParams};
use crate::proto::{ProtoError, backend, frontend};

/// What the client opened with, once encryption negotiation is over.
pub enum Opening {
    Startup(StartupParams),
    /// SSLRequest while TLS is available: the caller answers `S` and starts the handshake.
    Tls,
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// The client hung up before saying anything useful.
    Gone,
}

pub async fn read_opening<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    tls_available: bool,
) -> Result<Opening, ClientError> {
    loop {
        let len = loop {
            if let Some(len) = startup::packet_len(buf)? {
                break len;
            }
            if s.read_buf(buf)
                .await
                .map_err(|_| ProtoError::BadStartup("read failed"))?
                == 0
            {
                return Ok(Opening::Gone);
            }
        };
        let packet = buf.split_to(len);
        match startup::parse(&packet)? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                // Bytes pipelined after the request would bypass encryption (CVE-2021-23222).
                if !buf.is_empty() {
                    return Err(ProtoError::BadStartup("data after encryption request").into());
                }
                if tls_available && matches!(startup::parse(&packet)?, StartupPacket::SslRequest) {
                    return Ok(Opening::Tls);
                }
                s.write_all(b"N")
                    .await
                    .map_err(|_| ProtoError::BadStartup("write failed"))?;
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            StartupPacket::Startup { params } => return Ok(Opening::Startup(params)),
        }
    }
}

/// Asks for a cleartext password (the Go Perseus behaviour) and returns it.
pub async fn read_password<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<Vec<u8>>, ClientError> {
    if s.write_all(backend::AUTH_CLEARTEXT).await.is_err() {
        return Ok(None);
    }
    loop {
        if let Some(h) = header(buf, startup::MAX_STARTUP_LEN)?
            && buf.len() >= h.frame_len
        {
            if h.tag != b'p' {
                return Err(ClientError::Unexpected {
                    expected: "a password message",
                    got: h.tag as char,
                });
            }
            let pw = frontend::password(&buf[5..h.frame_len])?.to_vec();
            buf.advance(h.frame_len);
            return Ok(Some(pw));
        }
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}
