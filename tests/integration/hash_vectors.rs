//! The easy-scrypt hash against the shared compatibility vectors (Go easy-scrypt and
//! Python hashlib output) and against damaged or hostile hashes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use perseus::auth::hash::{HASH_LEN, HashError, verify_password};
use sha2::{Digest as _, Sha256};

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/easy-scrypt.json"
));

struct Vector {
    source: String,
    password: String,
    hash_b64: String,
}

fn vectors() -> Vec<Vector> {
    let doc: serde_json::Value = serde_json::from_str(VECTORS).expect("vector file is JSON");
    let list = doc["vectors"].as_array().expect("`vectors` is an array");
    assert!(
        list.len() >= 6,
        "expected a real vector set, got {}",
        list.len()
    );
    let field = |v: &serde_json::Value, name: &str| {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("vector lacks string `{name}`"))
            .to_owned()
    };
    list.iter()
        .map(|v| Vector {
            source: field(v, "source"),
            password: field(v, "password"),
            hash_b64: field(v, "hash_b64"),
        })
        .collect()
}

/// Builds a hash with a correct checksum around arbitrary key, salt and parameters.
fn forge(key_salt: &[u8], n: i32, r: i32, p: i32) -> String {
    let mut raw = key_salt[..48].to_vec();
    for v in [n, r, p] {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    let sum = Sha256::digest(&raw);
    raw.extend_from_slice(&sum);
    STANDARD.encode(raw)
}

#[test]
fn every_vector_verifies() {
    for v in vectors() {
        verify_password(&v.hash_b64, v.password.as_bytes())
            .unwrap_or_else(|e| panic!("{} / {:?}: {e}", v.source, v.password));
    }
}

#[test]
fn wrong_passwords_are_a_mismatch() {
    for v in vectors() {
        let wrong = format!("{}x", v.password);
        let err = verify_password(&v.hash_b64, wrong.as_bytes()).unwrap_err();
        assert!(matches!(err, HashError::Mismatch), "{}: {err}", v.source);
    }
    let first = &vectors()[0];
    let err = verify_password(&first.hash_b64, first.password.to_uppercase().as_bytes());
    assert!(matches!(err, Err(HashError::Mismatch)));
}

#[test]
fn truncated_hashes_are_malformed() {
    let v = &vectors()[0];
    let raw = STANDARD.decode(&v.hash_b64).unwrap();
    assert_eq!(raw.len(), HASH_LEN);
    for len in 0..raw.len() {
        let err = verify_password(&STANDARD.encode(&raw[..len]), v.password.as_bytes());
        assert!(
            matches!(err, Err(HashError::Malformed(_))),
            "length {len}: {err:?}"
        );
    }
    let mut longer = raw.clone();
    longer.push(0);
    let err = verify_password(&STANDARD.encode(&longer), v.password.as_bytes());
    assert!(matches!(err, Err(HashError::Malformed(_))));
    // Cut in the base64 text itself, so padding is wrong too.
    for cut in [1, 2, 3, 60, 123] {
        let err = verify_password(&v.hash_b64[..cut], v.password.as_bytes());
        assert!(
            matches!(err, Err(HashError::Malformed(_))),
            "cut {cut}: {err:?}"
        );
    }
}

#[test]
fn flipping_any_byte_stops_verification() {
    let v = &vectors()[0];
    let raw = STANDARD.decode(&v.hash_b64).unwrap();
    for at in 0..raw.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = raw.clone();
            bad[at] ^= mask;
            let result = verify_password(&STANDARD.encode(&bad), v.password.as_bytes());
            assert!(result.is_err(), "byte {at} ^ {mask:#x} still verified");
        }
    }
}

#[test]
fn tampering_with_a_fixed_checksum_is_a_mismatch() {
    // An attacker who recomputes the checksum still cannot change key or salt unnoticed.
    let v = &vectors()[0];
    let raw = STANDARD.decode(&v.hash_b64).unwrap();
    for at in [0, 31, 32, 47] {
        let mut bad = raw.clone();
        bad[at] ^= 1;
        let hash = forge(&bad, 16384, 8, 1);
        let err = verify_password(&hash, v.password.as_bytes()).unwrap_err();
        assert!(matches!(err, HashError::Mismatch), "byte {at}: {err}");
    }
    // Same key, salt and params re-forged must still verify: forge() is faithful.
    verify_password(&forge(&raw, 16384, 8, 1), v.password.as_bytes()).unwrap();
}

#[test]
fn over_bound_params_are_refused_before_deriving() {
    let raw = STANDARD.decode(&vectors()[0].hash_b64).unwrap();
    let cases = [
        (1 << 21, 8, 1),
        (1 << 30, 8, 1),
        (i32::MIN, 8, 1),
        (16384, 33, 1),
        (16384, i32::MAX, 1),
        (16384, 8, 17),
        (16384, 8, i32::MAX),
        (1 << 20, 8, 1),
        (1 << 18, 16, 16),
    ];
    for (n, r, p) in cases {
        let err = verify_password(&forge(&raw, n, r, p), b"test").unwrap_err();
        assert!(
            matches!(err, HashError::ParamsTooLarge { .. }),
            "N={n} r={r} p={p}: {err}"
        );
    }
}

#[test]
fn invalid_params_are_malformed() {
    let raw = STANDARD.decode(&vectors()[0].hash_b64).unwrap();
    for (n, r, p) in [
        (0, 8, 1),
        (1, 8, 1),
        (-16384, 8, 1),
        (16383, 8, 1),
        (16384, 0, 1),
    ] {
        let err = verify_password(&forge(&raw, n, r, p), b"test").unwrap_err();
        assert!(
            matches!(err, HashError::Malformed(_)),
            "N={n} r={r} p={p}: {err}"
        );
    }
    for (n, r, p) in [(16384, -1, 1), (16384, 8, 0), (16384, 8, -1)] {
        assert!(
            verify_password(&forge(&raw, n, r, p), b"test").is_err(),
            "{n} {r} {p}"
        );
    }
}

#[test]
fn non_base64_text_is_malformed() {
    let v = &vectors()[0];
    let mut text = v.hash_b64.clone();
    text.replace_range(10..11, "*");
    for bad in [
        text.as_str(),
        "not a hash",
        "\u{0}\u{1}",
        "====",
        "\u{1F600}",
    ] {
        let err = verify_password(bad, v.password.as_bytes());
        assert!(
            matches!(err, Err(HashError::Malformed(_))),
            "{bad:?}: {err:?}"
        );
    }
}
