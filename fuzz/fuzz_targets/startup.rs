//! The first bytes of every connection: the startup packet length check and parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perseus::proto::startup::{MAX_STARTUP_LEN, packet_len, parse};

fuzz_target!(|data: &[u8]| {
    // Any bytes at all: an answer, never a panic.
    let _ = parse(data);
    // As the session uses them: a whole packet that passed the length check.
    if let Ok(Some(n)) = packet_len(data) {
        assert!((8..=MAX_STARTUP_LEN).contains(&n) && n <= data.len());
        let _ = parse(&data[..n]);
    }
});
