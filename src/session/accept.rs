//! A fresh TCP connection up to its StartupMessage: client caps, SSLRequest/GSSENCRequest,
//! TLS (negotiated or PostgreSQL 17 direct), cancel requests, and the TLS-required policy.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;

use super::SharedRef;
use super::client::{fatal, serve};
use super::forward::ClientBufs;
use super::startup::{Opening, read_opening};
use crate::config::TlsMode;
use crate::error::ClientError;
use crate::net::tls::ALPN_POSTGRESQL;

/// First byte of a TLS handshake record: a client doing direct TLS sends its ClientHello at once.
const TLS_HANDSHAKE: u8 = 0x16;

pub async fn accept(mut tcp: TcpStream, peer: SocketAddr, shared: SharedRef) {
    let guard = shared.clone();
    let Some(_slot) = guard.limits.enter() else {
        tracing::warn!(%peer, max = shared.limits.max_total, "client refused: MaxClientConns reached");
        let e = ClientError::TooManyClients(format!(
            "too many client connections (MaxClientConns is {})",
            shared.limits.max_total
        ));
        return fatal(&mut tcp, &e).await;
    };
    let deadline = Instant::now() + shared.login_timeout;
    let (mode, acceptor) = shared.tls.current();
    // Direct TLS (PostgreSQL 17) starts with a handshake record instead of a length. Only
    // worth a peek (one more syscall per connection) when TLS can be served at all; without
    // it, such a client is recognised by its first byte once the opening fails to parse.
    let mut direct = false;
    if acceptor.is_some() {
        let mut first = [0u8; 1];
        match timeout_at(deadline, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        direct = first[0] == TLS_HANDSHAKE;
    }
    let mut bufs = ClientBufs::default();
    // Room for a whole startup packet in one read (an empty buffer would read 64 bytes).
    bufs.input.reserve(512);
    if !direct {
        let opened = timeout_at(
            deadline,
            read_opening(&mut tcp, &mut bufs.input, acceptor.is_some()),
        );
        match opened.await {
            Err(_) => {
                return fatal(&mut tcp, &ClientError::LoginTimeout(shared.login_timeout)).await;
            }
            Ok(Err(_)) if bufs.input.first() == Some(&TLS_HANDSHAKE) => {
                tracing::info!(%peer, "direct TLS attempted but TLS is disabled");
                return;
            }
            Ok(Err(e)) => return fatal(&mut tcp, &e).await,
            Ok(Ok(Opening::Gone)) => return,
            Ok(Ok(Opening::Cancel { pid, secret })) => {
                shared.cancel.cancel(pid, secret).await;
                return;
            }
            Ok(Ok(Opening::Startup(params))) => {
                if mode == TlsMode::Require {
                    tracing::info!(%peer, "client refused: TLS required");
                    let e = ClientError::TlsRequired;
                    return fatal(&mut tcp, &e).await;
                }
                return serve(tcp, bufs, params, peer, shared, deadline).await;
            }
            Ok(Ok(Opening::Tls)) => {
                if tcp.write_all(b"S").await.is_err() {
                    return;
                }
            }
        }
    }
    // Boxed: a task is allocated at the size of its largest state for its whole life, and a
    // TLS session (rustls state, its own session future) is far larger than a plaintext one,
    // so inline it would make every plaintext client pay for it.
    Box::pin(accept_tls(
        tcp, bufs, acceptor, direct, peer, shared, deadline,
    ))
    .await;
}

/// The TLS half of [`accept`]: the handshake (negotiated or direct), then the StartupMessage.
async fn accept_tls(
    tcp: TcpStream,
    mut bufs: ClientBufs,
    acceptor: Option<TlsAcceptor>,
    direct: bool,
    peer: SocketAddr,
    shared: SharedRef,
    deadline: Instant,
) {
    let Some(acceptor) = acceptor else {
        tracing::info!(%peer, "direct TLS attempted but TLS is disabled");
        return;
    };
    let mut tls = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    if direct && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        tracing::info!(%peer, "direct TLS without ALPN postgresql refused");
        return;
    }
    let opened = timeout_at(deadline, read_opening(&mut tls, &mut bufs.input, false));
    match opened.await {
        Err(_) => fatal(&mut tls, &ClientError::LoginTimeout(shared.login_timeout)).await,
        Ok(Err(e)) => fatal(&mut tls, &e).await,
        Ok(Ok(Opening::Cancel { pid, secret })) => {
            shared.cancel.cancel(pid, secret).await;
        }
        Ok(Ok(Opening::Startup(params))) => serve(tls, bufs, params, peer, shared, deadline).await,
        Ok(Ok(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::startup::StartupParams;

    /// Size of the future an async fn of three arguments returns, without calling it.
    fn future_size<A, B, C, F: Future>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every client is one task, allocated at the size of its largest state for its whole
    /// life, so an idle client costs at least this much. The login (6.5 KB) and the TLS
    /// path (rustls state, 10 KB) once made it 15 KB; they are boxed, and so is opening a
    /// server connection within a checkout (a waiting checkout itself is inline and small),
    /// so a plaintext client's task is about its session loop: 2.6 KB. The bound fails if
    /// the login or the connection opening comes back inline.
    #[test]
    fn a_plaintext_client_task_stays_small() {
        let size = future_size(accept);
        assert!(
            size <= 4 * 1024,
            "the per-client task future is {size} bytes"
        );
    }

    /// The TLS path is its own allocation: a plaintext client does not pay for it.
    #[test]
    fn the_tls_path_is_not_inline() {
        fn serve_size<S, F: Future>(
            _: impl Fn(S, ClientBufs, StartupParams, SocketAddr, SharedRef, Instant) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let accept = future_size(accept);
        let serve = serve_size(serve::<TcpStream>);
        assert!(
            accept <= serve + 1024,
            "accept's future ({accept} bytes) is much larger than a plaintext session's \
             ({serve} bytes): is the TLS path inline again?"
        );
    }
}
