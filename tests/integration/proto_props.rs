//! Property tests for the pure parsers a client's bytes reach first: whatever the input, they
//! answer Ok or Err and never panic; what the pooler or a real client encodes parses back to
//! what went in.

use std::collections::BTreeMap;

use bytes::BytesMut;
use perseus::proto::frame::{self, HEADER_LEN};
use perseus::proto::startup::{self, MAX_STARTUP_LEN, StartupPacket};
use perseus::proto::{ProtoError, backend, frontend, sql};
use perseus::session::tenant;
use postgres_protocol::message::frontend as fe;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    }
}

/// Bytes that often look like protocol input: random, or a plausible length prefix and
/// request code followed by random bytes.
fn packetish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..2048),
        (
            0u32..12_000,
            prop_oneof![
                Just(196_608u32),
                Just(80_877_102),
                Just(80_877_103),
                Just(80_877_104),
                any::<u32>()
            ],
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(len, code, body)| {
                let mut v = len.to_be_bytes().to_vec();
                v.extend_from_slice(&code.to_be_bytes());
                v.extend(body);
                v
            }),
    ]
}

/// A startup parameter name or value: no NUL (the wire format cannot carry one), valid UTF-8.
fn cstring(min: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), min..24)
        .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn packet_len_is_total(buf in packetish()) {
        match startup::packet_len(&buf) {
            Ok(None) => {
                if buf.len() >= 4 {
                    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    prop_assert!(len as i64 > buf.len() as i64, "complete packet reported incomplete");
                }
            }
            Ok(Some(n)) => {
                prop_assert!((8..=MAX_STARTUP_LEN).contains(&n));
                prop_assert!(n <= buf.len());
            }
            Err(ProtoError::BadLength { len, .. }) => {
                prop_assert!(!(8..=MAX_STARTUP_LEN as i64).contains(&len));
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn startup_parse_never_panics(buf in packetish()) {
        let _ = startup::parse(&buf);
        // And as the session uses it: only whole packets that packet_len accepted.
        if let Ok(Some(n)) = startup::packet_len(&buf) {
            let _ = startup::parse(&buf[..n]);
        }
    }

    #[test]
    fn startup_messages_round_trip(
        params in proptest::collection::btree_map(cstring(1), cstring(0), 0..8)
    ) {
        let mut buf = BytesMut::new();
        fe::startup_message(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut buf)
            .expect("encode");
        prop_assume!(buf.len() <= MAX_STARTUP_LEN);
        prop_assert_eq!(startup::packet_len(&buf), Ok(Some(buf.len())));
        let parsed = startup::parse(&buf);
        let Ok(StartupPacket::Startup { params: got }) = parsed else {
            return Err(TestCaseError::fail(format!("not a startup: {parsed:?}")));
        };
        // An empty value is how the list ends on the wire only for keys; values may be empty.
        let got: BTreeMap<String, String> =
            got.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        prop_assert_eq!(got, params);
    }

    #[test]
    fn cancel_requests_round_trip(pid in any::<i32>(), secret in any::<i32>()) {
        let mut buf = BytesMut::new();
        fe::cancel_request(pid, secret, &mut buf);
        prop_assert_eq!(startup::packet_len(&buf), Ok(Some(16)));
        prop_assert_eq!(startup::parse(&buf), Ok(StartupPacket::Cancel { pid, secret }));
    }

    #[test]
    fn header_is_total(buf in proptest::collection::vec(any::<u8>(), 0..16), max in 0usize..(2 << 30)) {
        match frame::header(&buf, max) {
            Ok(None) => prop_assert!(buf.len() < HEADER_LEN),
            Ok(Some(h)) => {
                prop_assert_eq!(h.tag, buf[0]);
                prop_assert!(h.frame_len >= HEADER_LEN && h.frame_len <= max + 1);
            }
            Err(ProtoError::BadLength { .. }) => prop_assert!(buf.len() >= HEADER_LEN),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn frames_round_trip(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = vec![tag];
        buf.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        let h = frame::header(&buf, 1 << 20).expect("valid").expect("complete header");
        prop_assert_eq!(h.tag, tag);
        prop_assert_eq!(h.frame_len, buf.len());
        // The same frame under a smaller limit is refused, not truncated.
        if !body.is_empty() {
            prop_assert!(frame::header(&buf, body.len() + 3).is_err());
        }
    }

    #[test]
    fn cstr_splits_at_the_first_nul(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
        match frame::cstr(&buf) {
            None => prop_assert!(!buf.contains(&0)),
            Some((s, rest)) => {
                prop_assert!(!s.contains(&0));
                prop_assert_eq!(s.len() + 1 + rest.len(), buf.len());
                prop_assert_eq!(buf[s.len()], 0);
            }
        }
    }

    #[test]
    fn frontend_parsers_are_total(body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = frontend::password(&body);
        let _ = frontend::query(&body);
        let _ = frontend::parse(&body);
        let _ = frontend::bind(&body);
        let _ = frontend::target(&body);
        let _ = backend::parse_parameter_status(&body);
        let _ = backend::parse_error_fields(&body);
    }

    #[test]
    fn frontend_messages_round_trip(
        a in cstring(0), b in cstring(0), pw in proptest::collection::vec(1u8..=255, 0..64)
    ) {
        let mut buf = BytesMut::new();
        fe::query(&a, &mut buf).unwrap();
        prop_assert_eq!(frontend::query(&buf[5..]).unwrap(), a.as_bytes());

        let mut buf = BytesMut::new();
        fe::password_message(&pw, &mut buf).unwrap();
        prop_assert_eq!(frontend::password(&buf[5..]).unwrap(), &pw[..]);

        let mut buf = BytesMut::new();
        fe::parse(&a, &b, [25u32], &mut buf).unwrap();
        prop_assert_eq!(frontend::parse(&buf[5..]).unwrap(), (a.as_bytes(), b.as_bytes()));

        let mut buf = BytesMut::new();
        let encode = |v: i32, out: &mut BytesMut| -> Result<
            postgres_protocol::IsNull,
            Box<dyn std::error::Error + Send + Sync>,
        > {
            out.extend_from_slice(&v.to_be_bytes());
            Ok(postgres_protocol::IsNull::No)
        };
        fe::bind(&a, &b, [1i16], [7i32], encode, [1i16], &mut buf)
            .map_err(|_| TestCaseError::fail("encode bind"))?;
        prop_assert_eq!(frontend::bind(&buf[5..]).unwrap(), (a.as_bytes(), b.as_bytes()));

        let mut buf = BytesMut::new();
        fe::describe(b'S', &a, &mut buf).unwrap();
        prop_assert_eq!(frontend::target(&buf[5..]).unwrap(), (b'S', a.as_bytes()));
        let mut buf = BytesMut::new();
        fe::close(b'P', &b, &mut buf).unwrap();
        prop_assert_eq!(frontend::target(&buf[5..]).unwrap(), (b'P', b.as_bytes()));
    }

    #[test]
    fn error_responses_round_trip(code in "[0-9A-Z]{5}", message in cstring(0)) {
        let mut out = BytesMut::new();
        backend::error(&mut out, "ERROR", &code, &message);
        let h = frame::header(&out, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(h.tag, b'E');
        prop_assert_eq!(h.frame_len, out.len());
        prop_assert_eq!(backend::parse_error_fields(&out[5..]), (code, message));
    }

    #[test]
    fn parameter_status_round_trips(name in cstring(1), value in cstring(0)) {
        let mut out = BytesMut::new();
        backend::parameter_status(&mut out, &name, &value);
        prop_assert_eq!(
            backend::parse_parameter_status(&out[5..]),
            Some((name.as_str(), value.as_str()))
        );
    }

    #[test]
    fn classify_is_total(sql in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = sql::classify(&sql);
    }

    #[test]
    fn a_search_path_change_is_seen_among_harmless_statements(
        before in proptest::collection::vec(harmless(), 0..4),
        after in proptest::collection::vec(harmless(), 0..4),
        change in search_path_change(),
        upper in any::<bool>(),
    ) {
        let change = if upper { change.to_uppercase() } else { change };
        let text = [before.join("; "), change, after.join("; ")].join("; ");
        prop_assert!(sql::classify(text.as_bytes()).search_path, "missed in {text:?}");
        let harmless_only = [before.join("; "), after.join("; ")].join("; ");
        prop_assert!(!sql::classify(harmless_only.as_bytes()).search_path, "{harmless_only:?}");
    }

    #[test]
    fn identify_is_total(
        params in proptest::collection::vec(
            (prop_oneof![
                Just("user".to_owned()), Just("database".to_owned()), Just("options".to_owned()),
                Just("schema_search_path".to_owned()), Just("search_path".to_owned()),
                Just("replication".to_owned()), cstring(0)
            ], prop_oneof![options_value(), cstring(0)]),
            0..8
        )
    ) {
        let params = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Ok(id) = tenant::identify(&params) {
            prop_assert!(!id.user.is_empty() && !id.database.is_empty() && !id.schema.is_empty());
        }
    }
}

proptest! {
    // Long generated texts: fewer cases keep the debug-build run short.
    #![proptest_config(ProptestConfig { cases: 400, ..config() })]

    #[test]
    fn classify_is_total_on_sqlish_text(words in proptest::collection::vec(sqlish_word(), 0..40)) {
        let _ = sql::classify(words.concat().as_bytes());
    }

}

fn sqlish_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("SET ".to_owned()),
        Just("set_config(".to_owned()),
        Just("search_path".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("$$".to_owned()),
        Just("$tag$".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("--".to_owned()),
        Just("\n".to_owned()),
        Just(";".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(" TO ".to_owned()),
        Just(" = ".to_owned()),
        Just("DISCARD ALL".to_owned()),
        Just("RESET".to_owned()),
        Just("temp".to_owned()),
        Just("WITH HOLD".to_owned()),
        Just("E'\\''".to_owned()),
        cstring(0),
    ]
}

fn harmless() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..1000).prop_map(|n| format!("SELECT {n}")),
        Just("SELECT 'a;b', \"col\" FROM t".to_owned()),
        Just("INSERT INTO t VALUES ($$x;y$$)".to_owned()),
        Just("UPDATE t SET v = 1 -- set search_path\n".to_owned()),
        Just("/* set search_path */ SELECT 1".to_owned()),
        Just("BEGIN".to_owned()),
        Just("COMMIT".to_owned()),
    ]
}

fn search_path_change() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("set search_path to other".to_owned()),
        Just("set search_path = 'other'".to_owned()),
        Just("set session search_path to other".to_owned()),
        Just("reset search_path".to_owned()),
        Just("reset all".to_owned()),
        Just("discard all".to_owned()),
        Just("select set_config('search_path', 'other', false)".to_owned()),
    ]
}

fn options_value() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("-c".to_owned()),
            Just("--".to_owned()),
            Just("search_path=".to_owned()),
            Just("=".to_owned()),
            Just("\\".to_owned()),
            Just(" ".to_owned()),
            Just("\"".to_owned()),
            cstring(0),
        ],
        0..10,
    )
    .prop_map(|v| v.concat())
}
