//! Batches the pooler answers without a server connection: a client outside any transaction
//! that only prepares named statements (Parse ... Sync, what libpq's PQprepare sends) gets
//! ParseComplete and ReadyForQuery at once; the statements are prepared lazily on whichever
//! connection first executes them. Besides saving a checkout, this keeps a single-threaded
//! client that prepares synchronously (pgbench -M prepared) from waiting on a server
//! connection its own other session holds.

use bytes::{Buf, BufMut, BytesMut};

use super::state::ClientState;
use super::stmts;
use crate::proto::frame::header;
use crate::proto::{ProtoError, frontend, sql};

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
            b'P' => {
                let (name, _) = frontend::parse(&input[pos + 5..pos + h.frame_len])?;
                if name.is_empty() {
                    return Ok(false);
                }
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
    output.put_slice(b"Z\0\0\0\x05I");
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
