//! Frame scanning in both directions: copy frames to the other side's output buffer, reading
//! only the few message types the pooler must understand and streaming the rest.

use std::collections::HashMap;

use bytes::{Buf, BytesMut};

use super::checkout::REPORTED_SETTABLE;
use super::state::{ClientState, TxnState};
use crate::proto::backend::parse_parameter_status;
use crate::proto::frame::header;
use crate::proto::{ProtoError, frontend, sql};

/// Client messages whose bodies the pooler reads before forwarding.
fn client_inspects(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'C' | b'X')
}

/// Server messages whose bodies the pooler reads before forwarding.
fn server_inspects(tag: u8) -> bool {
    matches!(tag, b'Z' | b'S')
}

/// Result of scanning client input.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientScan {
    Continue,
    /// The client sent Terminate: nothing after it is forwarded.
    Terminate,
}

/// Moves complete (or streamable) client frames from `input` to `out`, updating the state.
/// `schema_known` is cleared when the client's SQL may have changed search_path.
pub fn scan_client(
    input: &mut BytesMut,
    out: &mut BytesMut,
    t: &mut TxnState,
    st: &mut ClientState,
    schema_known: &mut Option<String>,
) -> Result<ClientScan, ProtoError> {
    loop {
        if t.client_remaining > 0 {
            let n = t.client_remaining.min(input.len());
            if n == 0 {
                return Ok(ClientScan::Continue);
            }
            out.extend_from_slice(&input[..n]);
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
        match h.tag {
            b'Q' | b'S' | b'F' => {
                t.pending += 1;
                t.unsynced = false;
            }
            b'd' | b'c' | b'f' | b'X' => {}
            _ => t.unsynced = true,
        }
        if !client_inspects(h.tag) {
            t.client_remaining = h.frame_len;
            continue;
        }
        let body = &input[5..h.frame_len];
        match h.tag {
            b'X' => {
                input.advance(h.frame_len);
                return Ok(ClientScan::Terminate);
            }
            b'Q' => note_sql(frontend::query(body)?, st, schema_known),
            b'P' => {
                let (name, text) = frontend::parse(body)?;
                if !name.is_empty() {
                    st.named.insert(name.to_vec());
                }
                note_sql(text, st, schema_known);
            }
            b'C' => {
                let (kind, name) = frontend::target(body)?;
                if kind == b'S' && !name.is_empty() {
                    st.named.remove(name);
                }
            }
            _ => {}
        }
        out.extend_from_slice(&input[..h.frame_len]);
        input.advance(h.frame_len);
    }
}

fn note_sql(text: &[u8], st: &mut ClientState, schema_known: &mut Option<String>) {
    let fx = sql::classify(text);
    if fx.search_path {
        *schema_known = None;
    }
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
    params: &mut HashMap<String, String>,
) -> Result<bool, ProtoError> {
    let mut boundary = false;
    loop {
        if t.server_remaining > 0 {
            let n = t.server_remaining.min(input.len());
            if n == 0 {
                return Ok(boundary);
            }
            out.extend_from_slice(&input[..n]);
            input.advance(n);
            t.server_remaining -= n;
            boundary = false;
            continue;
        }
        let Some(h) = header(input, crate::proto::frame::DEFAULT_MAX_MESSAGE_LEN)? else {
            return Ok(boundary);
        };
        if !server_inspects(h.tag) {
            t.server_remaining = h.frame_len;
            continue;
        }
        if input.len() < h.frame_len {
            input.reserve(h.frame_len - input.len());
            return Ok(false);
        }
        let body = &input[5..h.frame_len];
        match h.tag {
            b'Z' => {
                t.pending = t.pending.saturating_sub(1);
                t.status = *body.first().ok_or(ProtoError::Malformed("ReadyForQuery"))?;
                boundary = t.at_boundary();
            }
            b'S' => {
                if let Some((name, value)) = parse_parameter_status(body) {
                    let name = name.to_ascii_lowercase();
                    if REPORTED_SETTABLE.contains(&name.as_str()) {
                        st.wanted.insert(name.clone(), value.to_owned());
                    }
                    params.insert(name, value.to_owned());
                }
            }
            _ => {}
        }
        out.extend_from_slice(&input[..h.frame_len]);
        input.advance(h.frame_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn client() -> ClientState {
        ClientState {
            max_message: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn query_then_ready_is_a_boundary() {
        let (mut t, mut st, mut schema) = (TxnState::default(), client(), Some("a".into()));
        let mut input = BytesMut::from(&frame(b'Q', b"select 1\0")[..]);
        let mut out = BytesMut::new();
        scan_client(&mut input, &mut out, &mut t, &mut st, &mut schema).unwrap();
        assert_eq!(t.pending, 1);
        assert!(input.is_empty());
        let mut sin = BytesMut::from(&[frame(b'C', b"SELECT 1\0"), frame(b'Z', b"I")].concat()[..]);
        let mut cout = BytesMut::new();
        let mut params = HashMap::new();
        assert!(scan_server(&mut sin, &mut cout, &mut t, &mut st, &mut params).unwrap());
        assert_eq!(cout.len(), 20);
    }

    #[test]
    fn open_transaction_and_unsynced_batches_hold_the_connection() {
        let (mut t, mut st, mut schema) = (TxnState::default(), client(), None);
        let mut input = BytesMut::from(
            &[frame(b'Q', b"begin\0"), frame(b'P', b"\0select 1\0\0\0")].concat()[..],
        );
        let mut out = BytesMut::new();
        scan_client(&mut input, &mut out, &mut t, &mut st, &mut schema).unwrap();
        let mut sin = BytesMut::from(&frame(b'Z', b"I")[..]);
        let mut params = HashMap::new();
        assert!(
            !scan_server(&mut sin, &mut BytesMut::new(), &mut t, &mut st, &mut params).unwrap()
        );
    }

    #[test]
    fn partial_frames_wait_and_search_path_is_noticed() {
        let (mut t, mut st, mut schema) = (TxnState::default(), client(), Some("a".into()));
        let f = frame(b'Q', b"set search_path to b\0");
        let mut input = BytesMut::from(&f[..7]);
        let mut out = BytesMut::new();
        scan_client(&mut input, &mut out, &mut t, &mut st, &mut schema).unwrap();
        assert_eq!((t.pending, out.len()), (0, 0));
        input.extend_from_slice(&f[7..]);
        scan_client(&mut input, &mut out, &mut t, &mut st, &mut schema).unwrap();
        assert_eq!((t.pending, out.len()), (1, f.len()));
        assert_eq!(schema, None);
    }

    #[test]
    fn named_statements_are_tracked() {
        let (mut t, mut st, mut schema) = (TxnState::default(), client(), None);
        let mut input = BytesMut::from(&frame(b'P', b"s1\0select 1\0\0\0")[..]);
        scan_client(
            &mut input,
            &mut BytesMut::new(),
            &mut t,
            &mut st,
            &mut schema,
        )
        .unwrap();
        assert!(!st.may_release());
        let mut input = BytesMut::from(&frame(b'C', b"Ss1\0")[..]);
        scan_client(
            &mut input,
            &mut BytesMut::new(),
            &mut t,
            &mut st,
            &mut schema,
        )
        .unwrap();
        assert!(st.may_release());
    }

    #[test]
    fn terminate_stops_forwarding() {
        let (mut t, mut st, mut schema) = (TxnState::default(), client(), None);
        let mut input = BytesMut::from(&frame(b'X', b"")[..]);
        let mut out = BytesMut::new();
        let r = scan_client(&mut input, &mut out, &mut t, &mut st, &mut schema).unwrap();
        assert_eq!(r, ClientScan::Terminate);
        assert!(out.is_empty());
    }
}
