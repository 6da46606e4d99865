//! Message framing: a peer's length field is untrusted input, so every header is checked against limits here.

/// Tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL's own hard limit for a single message is 1 GiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("message length {len} is invalid (allowed {min}..={max})")]
    BadLength { len: i64, min: usize, max: usize },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet: {0}")]
    BadStartup(&'static str),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// The header of one regular (tagged) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Whole frame length, tag included.
    pub frame_len: usize,
}

/// Reads the header at the start of `buf`, or `None` when fewer than 5 bytes are there.
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<Header>, ProtoError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > max_len {
        return Err(ProtoError::BadLength {
            len: len as i64,
            min: 4,
            max: max_len,
        });
    }
    Ok(Some(Header {
        tag: buf[0],
        frame_len: len as usize + 1,
    }))
}

/// Splits a NUL-terminated string off the front of `buf`.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// A whole tagged message, for unit tests across the crate.
#[cfg(test)]
pub(crate) fn test_frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(header(b"Q\0\0\0", 100), Ok(None));
    }

    #[test]
    fn header_reads_length() {
        let h = header(b"Q\0\0\0\x09abcd\0", 100).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                tag: b'Q',
                frame_len: 10
            }
        );
    }

    #[test]
    fn header_rejects_absurd_lengths() {
        assert!(header(b"Q\xff\xff\xff\xff", 100).is_err());
        assert!(header(b"Q\0\0\0\x03", 100).is_err());
        assert!(header(b"Q\0\0\x10\0", 100).is_err());
    }

    #[test]
    fn cstr_splits() {
        assert_eq!(cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(cstr(b"ab"), None);
    }
}
