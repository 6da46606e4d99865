//! Messages the pooler itself sends to clients (encoded with pgwire), and the few server messages it reads.

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, SecretKey};

use super::frame::cstr;

fn put<M: Message>(m: &M, out: &mut BytesMut) {
    // Encoding into a BytesMut cannot fail for these fixed-shape messages.
    m.encode(out)
        .expect("encoding a backend message into memory");
}

/// An ErrorResponse (severity ERROR or FATAL) with SQLSTATE and message.
pub fn error(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    put(&ErrorResponse::new(fields), out);
}

/// AuthenticationCleartextPassword, the same nine bytes for every login: written as they
/// are, with no buffer to build.
pub const AUTH_CLEARTEXT: &[u8] = b"R\0\0\0\x08\0\0\0\x03";

pub fn auth_ok(out: &mut BytesMut) {
    put(&Authentication::Ok, out);
}

/// Written directly rather than through pgwire's message type, which takes owned Strings:
/// every login sends a dozen of these.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let len = 4 + name.len() + 1 + value.len() + 1;
    out.reserve(1 + len);
    out.put_u8(b'S');
    out.put_u32(len as u32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    put(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    put(&ReadyForQuery::new(status), out);
}

/// Name and value of a ParameterStatus body.
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((
        std::str::from_utf8(name).ok()?,
        std::str::from_utf8(value).ok()?,
    ))
}

/// SQLSTATE and message of an ErrorResponse/NoticeResponse body, for logs and decisions.
pub fn parse_error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, tail)) = cstr(tail) else {
            break;
        };
        match field {
            b'C' => code = String::from_utf8_lossy(value).into_owned(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
        rest = tail;
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_parser() {
        let mut out = BytesMut::new();
        error(
            &mut out,
            "FATAL",
            "28P01",
            "password authentication failed for user \"a\"",
        );
        assert_eq!(out[0], b'E');
        let (code, msg) = parse_error_fields(&out[5..]);
        assert_eq!(code, "28P01");
        assert!(msg.starts_with("password authentication failed"));
    }

    #[test]
    fn cleartext_request_is_what_pgwire_encodes() {
        let mut theirs = BytesMut::new();
        put(&Authentication::CleartextPassword, &mut theirs);
        assert_eq!(AUTH_CLEARTEXT, &theirs[..]);
    }

    #[test]
    fn parameter_status_encodes_as_pgwire_does_and_parses_back() {
        let mut ours = BytesMut::new();
        parameter_status(&mut ours, "TimeZone", "Europe/Zürich");
        let mut theirs = BytesMut::new();
        put(
            &pgwire::messages::startup::ParameterStatus::new(
                "TimeZone".into(),
                "Europe/Zürich".into(),
            ),
            &mut theirs,
        );
        assert_eq!(ours, theirs);
        assert_eq!(
            parse_parameter_status(&ours[5..]),
            Some(("TimeZone", "Europe/Zürich"))
        );
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, b'T');
        assert_eq!(&out[..], b"Z\0\0\0\x05T");
    }
}
