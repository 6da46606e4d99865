//! Regular messages: the header check, walking a buffer frame by frame as the session does,
//! and the body parsers for the messages the pooler looks inside.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perseus::proto::frame::{HEADER_LEN, cstr, header};
use perseus::proto::{backend, frontend};

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the length limit, so small and large limits both get explored.
    let (max, mut buf) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])) * 16, rest),
        _ => (1 << 20, data),
    };
    // Bounded by the buffer: every step consumes at least HEADER_LEN bytes.
    while let Ok(Some(h)) = header(buf, max) {
        assert!(h.frame_len >= HEADER_LEN && h.frame_len <= max + 1);
        if buf.len() < h.frame_len {
            break;
        }
        let body = &buf[HEADER_LEN..h.frame_len];
        let _ = match h.tag {
            b'p' => frontend::password(body).map(|_| ()),
            b'Q' => frontend::query(body).map(|_| ()),
            b'P' => frontend::parse(body).map(|_| ()),
            b'B' => frontend::bind(body).map(|_| ()),
            b'D' | b'C' => frontend::target(body).map(|_| ()),
            _ => Ok(()),
        };
        let _ = backend::parse_parameter_status(body);
        let _ = backend::parse_error_fields(body);
        let _ = cstr(body);
        buf = &buf[h.frame_len..];
    }
});
