//! Named prepared statements across transactions: each client statement maps to a server
//! statement named after a hash of (schema, SQL, parameter types), so identical statements
//! of one tenant share a server statement and two tenants' never do.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use crate::proto::sql::Effects;

/// A client statement as the server knows it.
#[derive(Debug)]
pub struct Prepared {
    pub server_name: Vec<u8>,
    /// The whole Parse message, already renamed, ready to send to any server connection.
    pub parse: Vec<u8>,
    /// What running it does to the session, applied at every Bind.
    pub effects: Effects,
}

/// Prefix no client-chosen name is ever passed through with (unknown names get another).
const PREFIX: &str = "perseus_";

/// The server name for a statement. `schema` is None when the connection's search_path is
/// unknown; the name is then unique so nothing else ever reuses that plan.
pub fn server_name(schema: Option<&str>, sql_and_types: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    match schema {
        Some(s) => {
            h.update(b"s");
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        None => h.update(rand::random::<[u8; 16]>()),
    }
    h.update(sql_and_types);
    let digest = h.finalize();
    let mut name = PREFIX.as_bytes().to_vec();
    for b in &digest[..16] {
        name.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    name
}

/// What an unknown client name becomes: it cannot collide with any real server statement,
/// so the server answers "does not exist" exactly as it would have directly.
pub fn unknown_name(client_name: &[u8]) -> Vec<u8> {
    let mut v = b"perseus_unknown_".to_vec();
    v.extend_from_slice(client_name);
    v
}

/// A message `tag` whose body is `prefix`, `name\0`, then `rest`.
pub fn frame_with_name(tag: u8, prefix: &[u8], name: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_frame_with_name(&mut out, tag, prefix, name, rest);
    out.to_vec()
}

/// As [`frame_with_name`], appended to `out` (no allocation on the per-message path).
pub fn write_frame_with_name(out: &mut BytesMut, tag: u8, prefix: &[u8], name: &[u8], rest: &[u8]) {
    let len = 4 + prefix.len() + name.len() + 1 + rest.len();
    out.reserve(len + 1);
    out.put_u8(tag);
    out.put_i32(len as i32);
    out.put_slice(prefix);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(rest);
}

/// A Close message for a server statement.
pub fn close_statement(name: &[u8]) -> Vec<u8> {
    frame_with_name(b'C', b"S", name, &[])
}

pub fn new_prepared(schema: Option<&str>, parse_rest: &[u8], effects: Effects) -> Arc<Prepared> {
    let server_name = server_name(schema, parse_rest);
    let parse = frame_with_name(b'P', &[], &server_name, parse_rest);
    Arc::new(Prepared {
        server_name,
        parse,
        effects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_schema_and_text() {
        let a = server_name(Some("a"), b"select 1\0\0\0");
        assert_eq!(a, server_name(Some("a"), b"select 1\0\0\0"));
        assert_ne!(a, server_name(Some("b"), b"select 1\0\0\0"));
        assert_ne!(a, server_name(Some("a"), b"select 2\0\0\0"));
        assert_ne!(server_name(None, b"x"), server_name(None, b"x"));
        assert!(a.starts_with(b"perseus_") && a.len() == 8 + 32);
    }

    #[test]
    fn frames_are_well_formed() {
        let f = frame_with_name(b'P', &[], b"n", b"select 1\0\0\0");
        assert_eq!(f[0], b'P');
        assert_eq!(
            i32::from_be_bytes(f[1..5].try_into().unwrap()) as usize,
            f.len() - 1
        );
        assert_eq!(&close_statement(b"n")[..], b"C\0\0\0\x07Sn\0");
    }
}
