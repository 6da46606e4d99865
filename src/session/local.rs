//! Batches the pooler answers without a server connection: a client outside any transaction
//! that only prepares named statements (Parse ... Sync, what libpq's PQprepare sends) gets
//! ParseComplete and ReadyForQuery at once; the statements are prepared lazily on whichever
//! connection first executes them. Besides saving a checkout, this keeps a single-threaded
//! client that prepares synchronously (pgbench -M prepared) from waiting on a server
//! connection its own other session holds. A request whose client cancelled it while it was
//! still queued for a connection is answered here too.

use bytes::{Buf, BufMut, BytesMut};

use super::state::ClientState;
use super::stmts;
use crate::proto::frame::header;
use crate::proto::{ProtoError, backend, frontend, sql};

/// Where a request ends: the message after which the server would answer ReadyForQuery.
fn ends_request(tag: u8) -> bool {
    matches!(tag, b'Q' | b'S' | b'F')
}

/// Bytes of the whole request at the front of `input` (every message through the first
/// Query, Sync or FunctionCall), or None while it is not all there.
pub fn whole_request(input: &[u8], max_message: usize) -> Result<Option<usize>, ProtoError> {
    let mut pos = 0;
    while let Some(h) = header(&input[pos..], max_message)? {
        if input.len() - pos < h.frame_len {
            break;
        }
        pos += h.frame_len;
        if ends_request(h.tag) {
            return Ok(Some(pos));
        }
    }
    Ok(None)
}

/// Answers the whole request at the front of `input` (see [`whole_request`]) as PostgreSQL
/// answers a statement cancelled before it ran: an error, then ReadyForQuery outside any
/// transaction (a client queued for a connection holds none). Nothing of it reached a
/// server, so no session state changes.
pub fn refuse_cancelled(input: &mut BytesMut, len: usize, output: &mut BytesMut) {
    input.advance(len);
    backend::error(
        output,
        "ERROR",
        "57014",
        "canceling statement due to user request",
    );
    backend::ready_for_query(output, b'I');
}

/// Answers one complete `Parse+ Sync` batch at the front of `input`; returns whether it did.
pub fn answer_prepare_batch(
    input: &mut BytesMut,
    output: &mut BytesMut,
    st: &mut ClientState,
) -> Result<bool, ProtoError> {
    // First pass: is the front exactly named Parses and a Sync, all complete?
    let mut pos = 0;
    let mut parses = 0;
    loop {
        let Some(h) = header(&input[pos..], st.max_message)? else {
            return Ok(false);
        };
        if input.len() - pos < h.frame_len {
            return Ok(false);
        }
        match h.tag {
            // An unnamed statement is told by its first byte, before its text is scanned:
            // drivers and pgbench send one with every query, and this runs before each.
            b'P' if input.get(pos + 5) == Some(&0) => return Ok(false),
            b'P' => {
                frontend::parse(&input[pos + 5..pos + h.frame_len])?;
                parses += 1;
            }
            b'S' if parses > 0 => {
                pos += h.frame_len;
                break;
            }
            _ => return Ok(false),
        }
        pos += h.frame_len;
    }
    let schema = st.schema.clone();
    let mut batch = input.split_to(pos);
    while !batch.is_empty() {
        let h = header(&batch, st.max_message)?.expect("checked above");
        if h.tag == b'P' {
            let body = &batch[5..h.frame_len];
            let (name, text) = frontend::parse(body)?;
            let rest = &body[name.len() + 1..];
            let p = stmts::new_prepared(Some(&schema), rest, sql::classify(text));
            st.stmts.insert(name.to_vec(), p);
            output.put_slice(b"1\0\0\0\x04");
        }
        batch.advance(h.frame_len);
    }
    backend::ready_for_query(output, b'I');
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proto::frame::test_frame as frame;

    fn client() -> ClientState {
        ClientState {
            schema: "a".into(),
            max_message: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn answers_parse_sync_locally() {
        let mut st = client();
        let mut input = BytesMut::from(
            &[
                frame(b'P', b"s1\0select 1\0\0\0"),
                frame(b'S', b""),
                frame(b'Q', b"x\0"),
            ]
            .concat()[..],
        );
        let mut out = BytesMut::new();
        assert!(answer_prepare_batch(&mut input, &mut out, &mut st).unwrap());
        assert_eq!(&out[..], b"1\0\0\0\x04Z\0\0\0\x05I");
        assert!(st.stmts.contains_key(&b"s1"[..]));
        assert_eq!(input[0], b'Q', "the rest stays for the server");
    }

    #[test]
    fn a_cancelled_request_is_answered_whole_and_the_next_one_stays() {
        let request = [
            frame(b'P', b"\0select 1\0\0\0"),
            frame(b'B', b"\0\0\0\0\0\0\0\0"),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
        ]
        .concat();
        let next = frame(b'Q', b"select 2\0");
        let all = [request.clone(), next.clone()].concat();
        assert_eq!(
            whole_request(&request[..request.len() - 1], 1 << 20),
            Ok(None)
        );
        assert_eq!(whole_request(&all, 1 << 20), Ok(Some(request.len())));
        let mut input = BytesMut::from(&all[..]);
        let mut out = BytesMut::new();
        refuse_cancelled(&mut input, request.len(), &mut out);
        assert_eq!(&input[..], &next[..]);
        assert_eq!(out[0], b'E');
        assert!(out.windows(5).any(|w| w == b"57014"));
        assert!(out.ends_with(b"Z\0\0\0\x05I"));
    }

    #[test]
    fn leaves_anything_else_alone() {
        for batch in [
            vec![frame(b'P', b"\0select 1\0\0\0"), frame(b'S', b"")],
            vec![
                frame(b'P', b"s1\0select 1\0\0\0"),
                frame(b'D', b"Ss1\0"),
                frame(b'S', b""),
            ],
            vec![frame(b'P', b"s1\0select 1\0\0\0")],
            vec![frame(b'S', b"")],
            // An unnamed statement after a named one: the batch is not all named.
            vec![
                frame(b'P', b"s1\0select 1\0\0\0"),
                frame(b'P', b"\0select 2\0\0\0"),
                frame(b'S', b""),
            ],
            // Unnamed and malformed: left for the scanner, which reports it.
            vec![frame(b'P', b"\0select"), frame(b'S', b"")],
        ] {
            let mut st = client();
            let mut input = BytesMut::from(&batch.concat()[..]);
            let before = input.clone();
            let mut out = BytesMut::new();
            assert!(!answer_prepare_batch(&mut input, &mut out, &mut st).unwrap());
            assert_eq!(input, before);
            assert!(out.is_empty());
        }
    }
}
