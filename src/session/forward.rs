//! The transaction-mode I/O loop: while a client holds a server connection, move bytes both
//! ways without blocking either direction on the other, until the connection is free again.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use super::scan::{ClientOut, ClientScan, ServerView, scan_client, scan_server};
use super::state::{ClientState, TxnState};
use crate::metrics::Metrics;
use crate::pool::ServerConn;
use crate::proto::ProtoError;

/// Stop reading a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Client messages are mostly small: a client's buffer grows to READ_CHUNK only once a single
/// read brings half this much (a bulk upload), so a short-lived client never costs 16 KiB.
const CLIENT_CHUNK: usize = 4 * 1024;

/// Buffers that belong to the client session and survive server checkouts, so a
/// transaction allocates nothing.
#[derive(Debug, Default)]
pub struct ClientBufs {
    pub input: BytesMut,
    pub output: BytesMut,
    to_server: BytesMut,
    txn: TxnState,
}

#[derive(Debug)]
pub enum Outcome {
    /// The server connection is clean and free; the client goes on.
    Released,
    /// The client left; `clean` says whether the server connection can be reused.
    ClientGone { clean: bool },
    /// The server connection failed; the client cannot go on.
    ServerLost(io::Error),
    /// The client broke the protocol.
    Protocol(ProtoError),
    /// The server sent something unframeable.
    ServerProtocol(ProtoError),
    /// The client held the server connection silently past a limit.
    Idle(IdleEnd),
}

/// Which limit a silent client holding a server connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEnd {
    /// Inside a transaction, batch or message: IdleInTransactionTimeoutSecs.
    InTransaction,
    /// A pinned client between transactions: IdleTimeoutSecs.
    Between,
}

/// How long a client may keep a server connection waiting on it; zero means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleLimits {
    pub between: std::time::Duration,
    pub in_transaction: std::time::Duration,
}

impl ClientBufs {
    /// Frees buffers that hold nothing (a long idle client keeps no memory it doesn't use).
    pub fn shrink_idle(&mut self) {
        if self.input.is_empty() {
            self.input = BytesMut::new();
        }
        if self.output.is_empty() {
            self.output = BytesMut::new();
        }
        self.to_server = BytesMut::new();
        self.txn = TxnState::default();
    }
}

/// Writes as much of `buf` as the socket takes; Pending (with the waker registered) when the
/// socket is full before `buf` is empty.
fn poll_drain<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !buf.is_empty() {
        match Pin::new(&mut *w).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    match Pin::new(&mut *w).poll_flush(cx) {
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        _ => Poll::Ready(Ok(())),
    }
}

/// Reads into `buf`, first making room for at least `chunk / 2` more bytes.
fn poll_fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < chunk / 2 {
        buf.reserve(chunk);
    }
    poll_read_buf(Pin::new(r), cx, buf)
}

/// Forwards until the server connection is free (or either side ends).
pub async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    conn: &mut ServerConn,
    bufs: &mut ClientBufs,
    st: &mut ClientState,
    metrics: &Metrics,
    limits: IdleLimits,
    on_pin: &mut (dyn FnMut(&'static str) + Send),
) -> Outcome {
    let mut pin_seen = st.pinned.is_some();
    let watch_idle = !limits.between.is_zero() || !limits.in_transaction.is_zero();
    // Read from the clock only when an idle limit is set: a transaction's clock reads add up.
    let mut last_client = watch_idle.then(std::time::Instant::now);
    // Made only when a client first keeps the connection waiting: most checkouts never do.
    let mut idle_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let (mut bytes_in, mut bytes_out) = (0usize, 0usize);
    let mut client_chunk = CLIENT_CHUNK;
    let ClientBufs {
        input,
        output,
        to_server,
        txn: t,
    } = bufs;
    t.reset();
    to_server.clear();
    let mut terminated = false;
    let ServerConn {
        stream,
        rbuf,
        schema,
        params,
        fitted,
        prepared,
        ..
    } = conn;
    macro_rules! view {
        () => {
            ServerView {
                schema: &mut *schema,
                params: &mut *params,
                fitted: &mut *fitted,
                prepared: &mut *prepared,
            }
        };
    }
    macro_rules! client_out {
        () => {
            ClientOut {
                to_server,
                to_client: &mut *output,
            }
        };
    }
    // Whatever the client already sent (that made us check out) goes first.
    match scan_client(input, client_out!(), t, st, view!()) {
        Ok(ClientScan::Continue) => {}
        Ok(ClientScan::Terminate) => terminated = true,
        Err(e) => return Outcome::Protocol(e),
    }
    if let (Some(reason), false) = (st.pinned, pin_seen) {
        pin_seen = true;
        on_pin(reason);
    }
    let outcome = poll_fn(|cx| {
        loop {
            // Only reads call for another round: the reads below already see what the writes
            // above freed, so a write alone leaves nothing more to do now.
            let mut progressed = false;
            match poll_drain(stream, to_server, cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Outcome::ServerLost(e)),
                Poll::Pending => {}
            }
            let before = output.len();
            let drained = poll_drain(client, output, cx);
            bytes_out += before.saturating_sub(output.len());
            match drained {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => {
                    return Poll::Ready(Outcome::ClientGone { clean: false });
                }
                Poll::Pending => {}
            }
            if terminated && to_server.is_empty() {
                let clean = t.at_boundary() && st.may_release();
                return Poll::Ready(Outcome::ClientGone { clean });
            }
            if output.len() < HIGH_WATER {
                match poll_fill(stream, rbuf, READ_CHUNK, cx) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Outcome::ServerLost(
                            io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    Poll::Ready(Ok(_)) => {
                        progressed = true;
                        let res = scan_server(rbuf, output, t, st, view!());
                        if let Some(mut frames) = t.replay.take_retry() {
                            // The hidden failure is over: the same batch goes again, its
                            // statements prepared afresh.
                            let again = scan_client(&mut frames, client_out!(), t, st, view!());
                            t.replay.restore(frames);
                            if let Err(e) = again {
                                return Poll::Ready(Outcome::Protocol(e));
                            }
                        }
                        match res {
                            Ok(true) if to_server.is_empty() && st.may_release() && !terminated => {
                                return Poll::Ready(Outcome::Released);
                            }
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Outcome::ServerProtocol(e)),
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Outcome::ServerLost(e)),
                    Poll::Pending => {}
                }
            }
            if !terminated && to_server.len() < HIGH_WATER {
                match poll_fill(client, input, client_chunk, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        let clean = t.at_boundary() && st.may_release() && to_server.is_empty();
                        return Poll::Ready(Outcome::ClientGone { clean });
                    }
                    Poll::Ready(Ok(n)) => {
                        progressed = true;
                        bytes_in += n;
                        if n >= CLIENT_CHUNK / 2 {
                            client_chunk = READ_CHUNK;
                        }
                        if watch_idle {
                            last_client = Some(std::time::Instant::now());
                        }
                        match scan_client(input, client_out!(), t, st, view!()) {
                            Ok(ClientScan::Continue) => {}
                            Ok(ClientScan::Terminate) => terminated = true,
                            Err(e) => return Poll::Ready(Outcome::Protocol(e)),
                        }
                        if let (Some(reason), false) = (st.pinned, pin_seen) {
                            pin_seen = true;
                            on_pin(reason);
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if !progressed {
                // The server owes nothing: the connection waits on the client alone.
                if watch_idle && t.pending == 0 && t.queue.is_empty() && t.server_remaining == 0 {
                    let (limit, end) = if t.at_boundary() {
                        (limits.between, IdleEnd::Between)
                    } else {
                        (limits.in_transaction, IdleEnd::InTransaction)
                    };
                    if !limit.is_zero() {
                        let last = last_client.unwrap_or_else(std::time::Instant::now);
                        let deadline = tokio::time::Instant::from_std(last + limit);
                        let timer = idle_timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if timer.deadline() != deadline {
                            timer.as_mut().reset(deadline);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Outcome::Idle(end));
                        }
                    }
                }
                return Poll::Pending;
            }
        }
    })
    .await;
    metrics.bytes_in(bytes_in);
    metrics.bytes_out(bytes_out);
    metrics.queries(t.requests);
    outcome
}
