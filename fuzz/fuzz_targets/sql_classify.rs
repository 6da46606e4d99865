//! The SQL classifier that decides whether a statement changes search_path or pins a session.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = perseus::proto::sql::classify(data);
});
