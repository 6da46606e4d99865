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
    pub schema: &'a mut Option<String>,
    pub params: &'a mut HashMap<String, String>,
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
                        st.wanted.insert(name.clone(), value.to_owned());
                    }
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
mod tests {
    use super::*;

    use crate::proto::frame::test_frame as frame;

    struct Fixture {
        t: TxnState,
        st: ClientState,
        schema: Option<String>,
        params: HashMap<String, String>,
        prepared: PreparedSet,
        to_server: BytesMut,
        to_client: BytesMut,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                t: TxnState::default(),
                st: ClientState {
                    max_message: 1 << 20,
                    ..Default::default()
                },
                schema: Some("a".into()),
                params: HashMap::new(),
                prepared: PreparedSet::new(10),
                to_server: BytesMut::new(),
                to_client: BytesMut::new(),
            }
        }

        fn client(&mut self, bytes: &[u8]) -> ClientScan {
            let mut input = BytesMut::from(bytes);
            let out = ClientOut {
                to_server: &mut self.to_server,
                to_client: &mut self.to_client,
            };
            let srv = ServerView {
                schema: &mut self.schema,
                params: &mut self.params,
                prepared: &mut self.prepared,
            };
            scan_client(&mut input, out, &mut self.t, &mut self.st, srv).unwrap()
        }

        fn server(&mut self, bytes: &[u8]) -> bool {
            let mut input = BytesMut::from(bytes);
            let srv = ServerView {
                schema: &mut self.schema,
                params: &mut self.params,
                prepared: &mut self.prepared,
            };
            scan_server(
                &mut input,
                &mut self.to_client,
                &mut self.t,
                &mut self.st,
                srv,
            )
            .unwrap()
        }
    }

    #[test]
    fn query_then_ready_is_a_boundary() {
        let mut f = Fixture::new();
        f.client(&frame(b'Q', b"select 1\0"));
        assert_eq!(f.t.pending, 1);
        assert!(f.server(&[frame(b'C', b"SELECT 1\0"), frame(b'Z', b"I")].concat()));
        assert_eq!(f.to_client.len(), 20);
    }

    #[test]
    fn open_transaction_and_unsynced_batches_hold_the_connection() {
        let mut f = Fixture::new();
        f.client(&[frame(b'Q', b"begin\0"), frame(b'P', b"\0select 1\0\0\0")].concat());
        assert!(!f.server(&frame(b'Z', b"T")));
    }

    #[test]
    fn search_path_changes_forget_the_schema() {
        let mut f = Fixture::new();
        let q = frame(b'Q', b"set search_path to b\0");
        f.client(&q[..7]);
        assert!(f.to_server.is_empty());
        let mut f = Fixture::new();
        f.client(&q);
        assert_eq!(f.schema, None);
    }

    #[test]
    fn named_statements_are_renamed_and_reparse_is_answered_locally() {
        let mut f = Fixture::new();
        let parse = frame(b'P', b"s1\0select 1\0\0\0");
        f.client(&[parse.clone(), frame(b'S', b"")].concat());
        assert!(
            f.to_server.windows(8).any(|w| w == b"perseus_"),
            "renamed on the wire"
        );
        assert!(!f.to_server.windows(3).any(|w| w == b"s1\0"));
        assert!(f.server(&[frame(b'1', b""), frame(b'Z', b"I")].concat()));
        // The same statement again on this connection: answered without the server.
        f.to_server.clear();
        f.to_client.clear();
        f.t = TxnState::default();
        f.client(&[parse, frame(b'S', b"")].concat());
        assert_eq!(&f.to_server[..], &frame(b'S', b"")[..]);
        // Nothing is ahead of it, so the pooler's ParseComplete is due at once.
        assert_eq!(&f.to_client[..], &frame(b'1', b"")[..]);
        assert!(f.server(&frame(b'Z', b"I")));
        assert_eq!(
            &f.to_client[..],
            &[frame(b'1', b""), frame(b'Z', b"I")].concat()[..]
        );
    }

    #[test]
    fn bind_on_a_fresh_connection_injects_the_parse() {
        let mut f = Fixture::new();
        f.client(&frame(b'P', b"s1\0select 1\0\0\0"));
        f.prepared.clear();
        f.to_server.clear();
        f.t = TxnState::default();
        f.client(&[frame(b'B', b"\0s1\0\0\0\0\0\0\0"), frame(b'S', b"")].concat());
        assert_eq!(f.to_server[0], b'P', "the Parse goes first");
        f.server(&[frame(b'1', b""), frame(b'2', b""), frame(b'Z', b"I")].concat());
        assert_eq!(
            &f.to_client[..],
            &[frame(b'2', b""), frame(b'Z', b"I")].concat()[..]
        );
    }

    #[test]
    fn after_a_plan_change_a_pipelined_reparse_replaces_the_statement() {
        let mut f = Fixture::new();
        let parse = frame(b'P', b"s1\0select 1\0\0\0");
        f.client(&[parse.clone(), frame(b'S', b"")].concat());
        f.server(&[frame(b'1', b""), frame(b'Z', b"I")].concat());
        f.t = TxnState::default();
        let run = [
            frame(b'B', b"\0s1\0\0\0\0\0\0\0"),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
        ];
        f.client(&run.concat());
        f.server(&frame(
            b'E',
            b"SERROR\0C0A000\0Mcached plan must not change result type\0\0",
        ));
        // The client reacts to the error before its ReadyForQuery has come back.
        f.to_server.clear();
        f.client(&[parse, frame(b'S', b"")].concat());
        assert_eq!(f.to_server[0], b'C', "the stale statement is closed first");
        assert!(
            f.to_server.windows(2).any(|w| w == b"P\0"),
            "and parsed again"
        );
    }

    #[test]
    fn a_hidden_plan_failure_is_retried_only_after_its_ready_for_query() {
        let mut f = Fixture::new();
        f.client(&[frame(b'P', b"s1\0select 1\0\0\0"), frame(b'S', b"")].concat());
        f.server(&[frame(b'1', b""), frame(b'Z', b"I")].concat());
        f.t = TxnState::default();
        f.to_client.clear();
        let run = [
            frame(b'B', b"\0s1\0\0\0\0\0\0\0"),
            frame(b'D', b"P\0"),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
        ];
        f.client(&run.concat());
        // The error and its ReadyForQuery arrive in separate reads.
        assert!(!f.server(&frame(
            b'E',
            b"SERROR\0C0A000\0Mcached plan must not change result type\0\0",
        )));
        assert!(f.to_client.is_empty(), "the error is hidden");
        assert!(
            f.t.replay.take_retry().is_none(),
            "the server still skips to Sync"
        );
        assert!(
            !f.server(&frame(b'Z', b"I")),
            "not a boundary: the batch goes again"
        );
        assert!(f.to_client.is_empty(), "its ReadyForQuery is hidden too");
        let frames = f.t.replay.take_retry().expect("due now");
        assert_eq!(&frames[..], &run.concat()[..]);
    }

    #[test]
    fn pinning_sql_is_failed_on_the_server_and_explained_when_refused() {
        let mut f = Fixture::new();
        f.st.refuse_pinning = true;
        f.client(&frame(b'Q', b"listen chan\0"));
        assert_eq!(&f.to_server[..], &frame(b'Q', b"perseus_refused\0")[..]);
        assert_eq!(f.st.pinned, None);
        f.server(
            &[
                frame(b'E', b"SERROR\0C42601\0Msyntax\0\0"),
                frame(b'Z', b"I"),
            ]
            .concat(),
        );
        assert!(f.to_client.windows(5).any(|w| w == b"0A000"));
        assert!(f.to_client.windows(6).any(|w| w == b"LISTEN"));
        // A prepared statement that would pin is bound to a statement that does not exist.
        f.to_server.clear();
        f.t = TxnState::default();
        f.client(&frame(b'P', b"s1\0select pg_advisory_lock(1)\0\0\0"));
        f.client(&[frame(b'B', b"\0s1\0\0\0\0\0\0\0"), frame(b'S', b"")].concat());
        assert!(f.to_server.windows(23).any(|w| w == REFUSED_STATEMENT));
        assert_eq!(f.st.pinned, None);
    }

    #[test]
    fn unknown_statement_names_never_reach_a_real_statement() {
        let mut f = Fixture::new();
        f.client(&frame(b'B', b"\0perseus_0123\0\0\0\0\0\0\0"));
        assert!(f.to_server.windows(16).any(|w| w == b"perseus_unknown_"));
    }

    #[test]
    fn terminate_stops_forwarding() {
        let mut f = Fixture::new();
        assert_eq!(f.client(&frame(b'X', b"")), ClientScan::Terminate);
        assert!(f.to_server.is_empty());
    }
}
