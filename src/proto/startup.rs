//! The untagged packets a client sends first: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage.

use super::ProtoError;

/// PostgreSQL refuses startup packets above 10,000 bytes; so do we.
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup { params: StartupParams },
}

/// The name/value pairs of a StartupMessage, sorted by name, the last of a repeated name
/// winning (as the server applies them in order). One string holds all their text: every
/// login passes through here, and a copy of each name and value was two allocations a pair.
#[derive(Debug, Clone, Default)]
pub struct StartupParams {
    text: String,
    /// Byte ranges in `text` of each name and its value, sorted by name.
    pairs: Vec<(Span, Span)>,
}

type Span = (u32, u32);

impl StartupParams {
    /// The value of `name`, if the client sent it.
    pub fn get(&self, name: &str) -> Option<&str> {
        let at = self
            .pairs
            .binary_search_by(|(n, _)| self.at(*n).cmp(name))
            .ok()?;
        Some(self.at(self.pairs[at].1))
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(n, v)| (self.at(*n), self.at(*v)))
    }

    fn at(&self, span: Span) -> &str {
        spanned(&self.text, span)
    }

    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        (start, self.text.len() as u32)
    }

    /// Sorts by name, keeping the last of each repeated name.
    fn settle(mut self) -> Self {
        // Stable sort of the reversed list: the last occurrence of a name comes first, and
        // dedup keeps the first of each run.
        self.pairs.reverse();
        let text = &self.text;
        let name = |span: Span| spanned(text, span);
        self.pairs.sort_by(|a, b| name(a.0).cmp(name(b.0)));
        self.pairs
            .dedup_by(|later, kept| name(later.0) == name(kept.0));
        self
    }
}

/// Equal when the pairs are, however the text is laid out.
impl PartialEq for StartupParams {
    fn eq(&self, other: &Self) -> bool {
        self.pairs.len() == other.pairs.len() && self.iter().eq(other.iter())
    }
}

impl Eq for StartupParams {}

impl<'a> FromIterator<(&'a str, &'a str)> for StartupParams {
    /// Pairs in the order a client would send them (a later repeat wins).
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut p = StartupParams::default();
        for (name, value) in pairs {
            let n = p.push(name);
            let v = p.push(value);
            p.pairs.push((n, v));
        }
        p.settle()
    }
}

/// The part of `text` that `span` covers.
fn spanned(text: &str, (start, end): Span) -> &str {
    &text[start as usize..end as usize]
}

/// Length of the packet at the start of `buf` once it is all there, checked against the limit.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(ProtoError::BadLength {
            len: len as i64,
            min: 8,
            max: MAX_STARTUP_LEN,
        });
    }
    let len = len as usize;
    Ok((buf.len() >= len).then_some(len))
}

/// Parses one whole packet (length prefix included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, ProtoError> {
    let Some(&[a, b, c, d]) = packet.get(4..8) else {
        return Err(ProtoError::BadStartup("packet shorter than 8 bytes"));
    };
    let code = u32::from_be_bytes([a, b, c, d]);
    match code {
        SSL_REQUEST if packet.len() == 8 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if packet.len() == 8 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST if packet.len() == 16 => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes(packet[8..12].try_into().expect("4 bytes")),
            secret: i32::from_be_bytes(packet[12..16].try_into().expect("4 bytes")),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            Err(ProtoError::BadStartup("request code with a wrong length"))
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 || minor != 0 {
                return Err(ProtoError::UnsupportedProtocol { major, minor });
            }
            if packet.last() != Some(&0) {
                return Err(ProtoError::BadStartup("parameter list is not terminated"));
            }
            Ok(StartupPacket::Startup {
                params: parameters(&packet[8..])?,
            })
        }
    }
}

/// The parameter list of a StartupMessage (see [`StartupParams`]). Parsed here rather than
/// through a general message decoder, which copied the packet and built a map only for it to
/// be turned into a list.
fn parameters(body: &[u8]) -> Result<StartupParams, ProtoError> {
    // Offsets are kept as u32: checked here, not left to the caller's use of packet_len.
    if body.len() > MAX_STARTUP_LEN {
        return Err(ProtoError::BadLength {
            len: body.len() as i64,
            min: 8,
            max: MAX_STARTUP_LEN,
        });
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ProtoError::BadStartup("undecodable parameters"))?;
    let mut pairs = Vec::with_capacity(8);
    let mut rest = text;
    loop {
        let (name, after) = cstring(text, rest)?;
        if name.0 == name.1 {
            break;
        }
        let (value, after) = cstring(text, after)?;
        pairs.push((name, value));
        rest = after;
    }
    Ok(StartupParams {
        text: text.to_owned(),
        pairs,
    }
    .settle())
}

/// The NUL-terminated string at the start of `rest` (a suffix of `text`), as a span of `text`.
fn cstring<'a>(text: &str, rest: &'a str) -> Result<(Span, &'a str), ProtoError> {
    // A byte scan: `str::find` with a char pattern is several times slower here.
    let end = rest
        .bytes()
        .position(|c| c == 0)
        .ok_or(ProtoError::BadStartup("truncated"))?;
    let start = (text.len() - rest.len()) as u32;
    Ok(((start, start + end as u32), &rest[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn ssl_and_cancel() {
        assert_eq!(
            parse(&packet(SSL_REQUEST, b"")),
            Ok(StartupPacket::SslRequest)
        );
        let c = packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(parse(&c), Ok(StartupPacket::Cancel { pid: 7, secret: 9 }));
    }

    #[test]
    fn startup_params() {
        let p = packet(196_608, b"user\0bob\0database\0db\0\0");
        assert_eq!(packet_len(&p), Ok(Some(p.len())));
        let StartupPacket::Startup { params } = parse(&p).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(params.get("user"), Some("bob"));
        assert_eq!(params.get("database"), Some("db"));
        assert_eq!(params.get("options"), None);
    }

    #[test]
    fn repeated_names_keep_the_last_value_and_the_list_is_sorted() {
        let p = packet(196_608, b"user\0a\0database\0db\0user\0b\0\0");
        let StartupPacket::Startup { params } = parse(&p).unwrap() else {
            panic!("not a startup")
        };
        let pairs: Vec<_> = params.iter().collect();
        assert_eq!(pairs, [("database", "db"), ("user", "b")]);
        let built: StartupParams = [("user", "a"), ("database", "db"), ("user", "b")]
            .into_iter()
            .collect();
        assert_eq!(built, params);
    }

    #[test]
    fn a_parameter_list_longer_than_the_limit_is_refused_even_without_packet_len() {
        let mut body = b"user\0".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_STARTUP_LEN));
        body.extend_from_slice(b"\0\0");
        assert!(matches!(
            parse(&packet(196_608, &body)),
            Err(ProtoError::BadLength { .. })
        ));
    }

    #[test]
    fn names_without_values_and_bad_utf8_are_refused() {
        for body in [
            &b"user\0\0"[..],
            b"user\0bob\0options\0",
            b"user\0b\xffb\0\0",
        ] {
            assert!(
                matches!(
                    parse(&packet(196_608, body)),
                    Err(ProtoError::BadStartup(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_versions_and_lengths() {
        assert!(matches!(
            parse(&packet(2 << 16, b"\0")),
            Err(ProtoError::UnsupportedProtocol { major: 2, .. })
        ));
        assert!(packet_len(&[0, 0, 0xff, 0xff]).is_err());
        assert!(packet_len(&[0, 0, 0, 4]).is_err());
        assert!(parse(&packet(196_608, b"user\0bob")).is_err());
    }
}
