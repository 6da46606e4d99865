//! Frame scanning in both directions: copy frames to the other side's output buffer, reading
//! only the message types the pooler must understand, translating prepared-statement names,
//! and streaming everything else.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::checkout::REPORTED_SETTABLE;
use super::extended::{Action, Entry, Expect, Mode};
use super::replay::{PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE};
use super::state::{ClientState, TxnState};
use super::stmts::{self, Prepared};
use crate::pool::prepared::PreparedSet;
use crate::proto::backend::{parse_error_fields, parse_parameter_status};
use crate::proto::frame::{DEFAULT_MAX_MESSAGE_LEN, header};
use crate::proto::{ProtoError, frontend, sql};

/// The parts of a server connection the scanners read and update.
pub struct ServerView<'a> {
    pub schema: &'a mut Option<Arc<str>>,
    pub params: &'a mut HashMap<String, String>,
    /// Cleared whenever `params` changes (see `ServerConn::fitted`).
    pub fitted: &'a mut Option<crate::pool::server::FittedSettings>,
    pub prepared: &'a mut PreparedSet,
}

/// Client messages whose bodies the pooler reads before forwarding.
fn client_inspects(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'C' | b'D' | b'X')
}

/// Result of scanning client input.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientScan {
    Continue,
    /// The client sent Terminate: nothing after it is forwarded.
    Terminate,
}

/// Output side of a client scan: bytes for the server, and the pooler's own answers.
pub struct ClientOut<'a> {
    pub to_server: &'a mut BytesMut,
    pub to_client: &'a mut BytesMut,
}

/// Moves complete (or streamable) client frames from `input` to the server, updating state.
pub fn scan_client(
    input: &mut BytesMut,
    out: ClientOut<'_>,
    t: &mut TxnState,
    st: &mut ClientState,
    mut srv: ServerView<'_>,
) -> Result<ClientScan, ProtoError> {
    let ClientOut {
        to_server,
        to_client,
    } = out;
    loop {
        if t.client_remaining > 0 {
            let n = t.client_remaining.min(input.len());
            if n == 0 {
                return Ok(ClientScan::Continue);
            }
            to_server.extend_from_slice(&input[..n]);
            input.advance(n);
            t.client_remaining -= n;
            continue;
        }
        let Some(h) = header(input, st.max_message)? else {
            return Ok(ClientScan::Continue);
        };
        if client_inspects(h.tag) && input.len() < h.frame_len {
            input.reserve(h.frame_len - input.len());
            return Ok(ClientScan::Continue);
        }
        let at_boundary = t.at_boundary();
        match input.get(..h.frame_len) {
            Some(whole) => t.replay.on_client_frame(h.tag, whole, at_boundary),
            None => t.replay.on_partial_frame(at_boundary),
        }
        let simple = |e: Expect, t: &mut TxnState, to_client: &mut BytesMut| {
            t.queue.push(Entry::forward(e), to_client);
        };
        match h.tag {
            b'S' | b'F' => {
                t.pending += 1;
                t.requests += 1;
                t.unsynced = false;
                simple(Expect::Ready, t, to_client);
            }
            b'E' => {
                t.unsynced = true;
                simple(Expect::Execute, t, to_client);
            }
            b'd' | b'c' | b'f' | b'H' => {}
            _ if !client_inspects(h.tag) => t.unsynced = true,
            _ => {}
        }
        if !client_inspects(h.tag) {
            t.client_remaining = h.frame_len;
            continue;
        }
        let frame = input.split_to(h.frame_len);
        let body = &frame[5..];
        match h.tag {
            b'X' => return Ok(ClientScan::Terminate),
            b'Q' => {
                let fx = sql::classify(frontend::query(body)?);
                st.unnamed = None;
                t.pending += 1;
                t.requests += 1;
                t.unsynced = false;
                if let Some(reason) = refusal(&fx, st) {
                    // The server fails it, so the transaction state stays the server's.
                    t.queue.push(refused(Expect::Ready, reason), to_client);
                    to_server.extend_from_slice(REFUSED_QUERY);
                    continue;
                }
                apply_effects(&fx, st, &mut srv);
                simple(Expect::Ready, t, to_client);
                to_server.extend_from_slice(&frame);
            }
            b'P' => {
                t.unsynced = true;
                let (name, text) = frontend::parse(body)?;
                // What the statement does to the session happens when it runs: on Bind.
                let fx = sql::classify(text);
                if name.is_empty() {
                    // Reuse the buffer: lib/pq and pgbench send an unnamed Parse per query.
                    match &mut st.unnamed {
                        Some((buf, old)) => {
                            buf.clear();
                            buf.extend_from_slice(&frame);
                            *old = fx;
                        }
                        None => st.unnamed = Some((frame.to_vec(), fx)),
                    }
                    t.unnamed_here = true;
                    simple(Expect::Parse, t, to_client);
                    to_server.extend_from_slice(&frame);
                } else {
                    let rest = &body[name.len() + 1..];
                    let p = stmts::new_prepared(srv.schema.as_deref(), rest, fx);
                    st.stmts.insert(name.to_vec(), p.clone());
                    if srv.prepared.touch(&p.server_name) {
                        t.queue.push(synthetic(Expect::Parse, b'1'), to_client);
                    } else {
                        send_parse(&p, Mode::Forward, t, srv.prepared, to_server, to_client);
                    }
                }
            }
            b'B' => {
                t.unsynced = true;
                let (portal, stmt) = frontend::bind(body)?;
                let rest = &body[portal.len() + stmt.len() + 2..];
                let fx = if stmt.is_empty() {
                    st.unnamed.as_ref().map(|(_, fx)| fx.clone())
                } else {
                    st.stmts.get(stmt).map(|p| p.effects.clone())
                };
                if let Some(reason) = fx.as_ref().and_then(|fx| refusal(fx, st)) {
                    t.queue.push(refused(Expect::Bind, reason), to_client);
                    let prefix = &body[..portal.len() + 1];
                    stmts::write_frame_with_name(to_server, b'B', prefix, REFUSED_STATEMENT, rest);
                    continue;
                }
                if let Some(fx) = fx {
                    apply_effects(&fx, st, &mut srv);
                }
                let server = ensure(stmt, t, st, srv.prepared, to_server, to_client);
                simple(Expect::Bind, t, to_client);
                match server {
                    None => to_server.extend_from_slice(&frame),
                    Some(name) => {
                        // Bind's body is portal\0 statement\0 rest: rewrite the statement.
                        let prefix = &body[..portal.len() + 1];
                        stmts::write_frame_with_name(to_server, b'B', prefix, name.bytes(), rest);
                    }
                }
            }
            b'D' => {
                t.unsynced = true;
                let (kind, name) = frontend::target(body)?;
                let server = if kind == b'S' {
                    ensure(name, t, st, srv.prepared, to_server, to_client)
                } else {
                    None
                };
                simple(Expect::Describe, t, to_client);
                match server {
                    None => to_server.extend_from_slice(&frame),
                    Some(n) => stmts::write_frame_with_name(to_server, b'D', b"S", n.bytes(), &[]),
                }
            }
            b'C' => {
                t.unsynced = true;
                let (kind, name) = frontend::target(body)?;
                if kind == b'S' && !name.is_empty() {
                    // The server statement stays cached for reuse; the client's name goes.
                    st.stmts.remove(name);
                    t.queue.push(synthetic(Expect::Close, b'3'), to_client);
                } else {
                    if kind == b'S' {
                        st.unnamed = None;
                    }
                    simple(Expect::Close, t, to_client);
                    to_server.extend_from_slice(&frame);
                }
            }
            _ => to_server.extend_from_slice(&frame),
        }
    }
}

/// Sent instead of a query refused for pinning: it fails on the server at once, cheaply.
const REFUSED_QUERY: &[u8] = b"Q\0\0\0\x14perseus_refused\0";
/// Bound instead of a statement refused for pinning; no statement has this name.
const REFUSED_STATEMENT: &[u8] = b"perseus_pinning_refused";

/// Why SQL with these effects must not run: it would pin while pinning is refused.
fn refusal(fx: &sql::Effects, st: &ClientState) -> Option<&'static str> {
    match (fx.pin, st.refuse_pinning, st.pinned) {
        (Some(reason), true, None) => Some(reason),
        _ => None,
    }
}

fn refused(expect: Expect, reason: &'static str) -> Entry {
    Entry {
        expect,
        mode: Mode::Refused(reason),
        parsed: None,
    }
}

fn synthetic(expect: Expect, tag: u8) -> Entry {
    Entry {
        expect,
        mode: Mode::Synthetic(tag),
        parsed: None,
    }
}

/// Sends a renamed Parse (closing the least recently used statement if the set is full).
fn send_parse(
    p: &Prepared,
    mode: Mode,
    t: &mut TxnState,
    prepared: &mut PreparedSet,
    to_server: &mut BytesMut,
    to_client: &mut BytesMut,
) {
    if t.queue.skipping() {
        // The server discards it anyway; sending keeps the byte stream as the client meant it.
        if mode == Mode::Forward {
            to_server.extend_from_slice(&p.parse);
        }
        return;
    }
    if prepared.take_stale(&p.server_name) {
        // DDL may have changed what the old plan returns: replace it, never reuse it.
        push_swallowed_close(&p.server_name, t, to_server, to_client);
    }
    if let Some(old) = prepared.insert(&p.server_name) {
        push_swallowed_close(&old, t, to_server, to_client);
    }
    to_server.extend_from_slice(&p.parse);
    let entry = Entry {
        expect: Expect::Parse,
        mode,
        parsed: Some(p.server_name.clone()),
    };
    t.queue.push(entry, to_client);
}

/// Closes a server statement on the pooler's behalf; the client never sees the answer.
fn push_swallowed_close(
    name: &[u8],
    t: &mut TxnState,
    to_server: &mut BytesMut,
    to_client: &mut BytesMut,
) {
    to_server.extend_from_slice(&stmts::close_statement(name));
    let close = Entry {
        expect: Expect::Close,
        mode: Mode::Swallow,
        parsed: None,
    };
    t.queue.push(close, to_client);
}

/// Makes sure the statement a Bind/Describe names exists on this connection; returns the
/// server name to use, or None to forward the message unchanged (the unnamed statement).
fn ensure(
    name: &[u8],
    t: &mut TxnState,
    st: &mut ClientState,
    prepared: &mut PreparedSet,
    to_server: &mut BytesMut,
    to_client: &mut BytesMut,
) -> Option<ServerName> {
    if name.is_empty() {
        // An unnamed statement parsed in an earlier batch may live on another connection.
        if !t.unnamed_here
            && !t.queue.skipping()
            && let Some((parse, _)) = &st.unnamed
        {
            to_server.extend_from_slice(parse);
            let entry = Entry {
                expect: Expect::Parse,
                mode: Mode::Swallow,
                parsed: None,
            };
            t.queue.push(entry, to_client);
            t.unnamed_here = true;
        }
        return None;
    }
    let Some(p) = st.stmts.get(name).cloned() else {
        return Some(ServerName::Unknown(stmts::unknown_name(name)));
    };
    if !prepared.touch(&p.server_name) {
        send_parse(&p, Mode::Swallow, t, prepared, to_server, to_client);
    }
    Some(ServerName::Known(p))
}

/// The server-side name a client statement name translates to.
enum ServerName {
    Known(Arc<Prepared>),
    Unknown(Vec<u8>),
}

impl ServerName {
    fn bytes(&self) -> &[u8] {
        match self {
            ServerName::Known(p) => &p.server_name,
            ServerName::Unknown(n) => n,
        }
    }
}

fn apply_effects(fx: &sql::Effects, st: &mut ClientState, srv: &mut ServerView<'_>) {
    if fx.search_path {
        *srv.schema = None;
    }
    if fx.deallocate {
        srv.prepared.clear();
    }
    st.touched.extend(fx.settings.iter().cloned());
    st.reset_all |= fx.reset_all;
    if let (Some(reason), None) = (fx.pin, st.pinned) {
        tracing::info!(reason, "client pinned to its server connection");
        st.pinned = Some(reason);
    }
}

/// Moves server frames from `input` to `out`. Returns true when a ReadyForQuery left the
/// connection at a transaction boundary for this client.
pub fn scan_server(
    input: &mut BytesMut,
    out: &mut BytesMut,
    t: &mut TxnState,
    st: &mut ClientState,
    srv: ServerView<'_>,
) -> Result<bool, ProtoError> {
    let mut boundary = false;
    let mut unprepare = Vec::new();
    loop {
        if t.server_remaining > 0 {
            let n = t.server_remaining.min(input.len());
            if n == 0 {
                break;
            }
            out.extend_from_slice(&input[..n]);
            input.advance(n);
            t.server_remaining -= n;
            boundary = false;
            t.replay.answered();
            continue;
        }
        let Some(h) = header(input, DEFAULT_MAX_MESSAGE_LEN)? else {
            break;
        };
        // Only row and COPY data stream; every message that can end a request is read whole,
        // so the pooler's own answers can follow it in order.
        let small = !matches!(h.tag, b'D' | b'd');
        if small && input.len() < h.frame_len {
            input.reserve(h.frame_len - input.len());
            break;
        }
        let action = t.queue.on_server(h.tag, &mut unprepare);
        if !small {
            // Large messages stream; none of them is ever swallowed.
            t.server_remaining = h.frame_len;
            t.replay.answered();
            continue;
        }
        let body = &input[5..h.frame_len];
        let mut hide = false;
        match h.tag {
            b'Z' => {
                t.pending = t.pending.saturating_sub(1);
                t.status = *body.first().ok_or(ProtoError::Malformed("ReadyForQuery"))?;
                // The end of a failure the pooler hid: the batch goes again instead.
                hide = t.replay.on_ready();
                boundary = !hide && t.at_boundary();
            }
            b'E' => {
                // Identical SQL maps to one server statement, so a client re-preparing after
                // DDL would get the stale plan again: none of this connection's is reused.
                let (code, message) = parse_error_fields(body);
                if code == PLAN_CHANGED_CODE && message.contains(PLAN_CHANGED_MESSAGE) {
                    srv.prepared.mark_stale();
                }
                hide = t.replay.on_error(&code, &message);
            }
            b'S' => {
                if let Some((name, value)) = parse_parameter_status(body) {
                    let name = name.to_ascii_lowercase();
                    if REPORTED_SETTABLE.contains(&name.as_str()) {
                        st.wanted.set(&name, value);
                    }
                    *srv.fitted = None;
                    srv.params.insert(name, value.to_owned());
                }
            }
            _ => {}
        }
        if let Action::Refused(reason) = action {
            let message = format!(
                "{reason} is refused: it would pin this session to one server connection \
                 (ClientSettings.RefusePinning is on)"
            );
            crate::proto::backend::error(out, "ERROR", "0A000", &message);
        }
        if action == Action::Forward && !hide {
            out.extend_from_slice(&input[..h.frame_len]);
            if !matches!(h.tag, b'N' | b'S' | b'A' | b'E') {
                t.replay.answered();
            }
        }
        input.advance(h.frame_len);
        t.queue.emit_synthetic(out);
    }
    for name in unprepare {
        srv.prepared.remove(&name);
    }
    Ok(boundary)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
