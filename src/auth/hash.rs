//! The easy-scrypt v1 password hash that the Go Perseus stores in `source_pass_hashed`.
//!
//! Layout before standard base64 (92 bytes):
//! `key(32) || salt(16) || N || r || p (int32 little-endian each) || SHA-256(first 60 bytes)`.
//!
//! N, r and p are read from the stored hash, so a corrupted or hostile row could ask
//! for gigabytes of memory or minutes of CPU. They are bounded (see `MAX_*` below);
//! the bounds accept the standard 16384/8/1 with ample headroom.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::TryRng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Length of the decoded hash.
pub const HASH_LEN: usize = 92;
const KEY_LEN: usize = 32;
const SALT_LEN: usize = 16;
const SALT_END: usize = KEY_LEN + SALT_LEN;
const CHECKED_LEN: usize = SALT_END + 12;

/// Largest accepted log2(N): N <= 2^20.
pub const MAX_LOG_N: u32 = 20;
/// Largest accepted block size r.
pub const MAX_R: u32 = 32;
/// Largest accepted parallelism p.
pub const MAX_P: u32 = 16;
/// Largest accepted scrypt working memory, 128 * N * r bytes (256 MiB).
pub const MAX_MEMORY_BYTES: u64 = 256 << 20;
/// Largest accepted total work N * r * p: 32 times the standard 2^17 (a few seconds).
pub const MAX_WORK: u64 = 1 << 22;
/// Base64 text longer than this cannot be a 92-byte hash; refuse before decoding.
const MAX_ENCODED_LEN: usize = 256;

/// Why a stored hash did not accept a password. No variant carries the password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password does not match")]
    Mismatch,
    #[error("malformed hash: {0}")]
    Malformed(String),
    #[error(
        "hash parameters exceed the accepted bounds (N={n}, r={r}, p={p}; \
         limits: N<=2^20, r<=32, p<=16, 128*N*r<=256MiB, N*r*p<=2^22)"
    )]
    ParamsTooLarge { n: u32, r: u32, p: u32 },
    #[error("the operating system random number generator failed: {0}")]
    Rng(String),
}

/// scrypt cost parameters as stored in the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub n: u32,
    pub r: u32,
    pub p: u32,
}

impl HashParams {
    /// What the Go genhash writes: N=16384, r=8, p=1.
    pub const STANDARD: HashParams = HashParams {
        n: 16384,
        r: 8,
        p: 1,
    };

    /// Checks the parameters against the bounds and converts them for the scrypt crate.
    fn to_scrypt(self) -> Result<scrypt::Params, HashError> {
        let HashParams { n, r, p } = self;
        if n < 2 || !n.is_power_of_two() {
            return Err(HashError::Malformed(format!(
                "N={n} is not a power of two greater than 1"
            )));
        }
        if r == 0 || p == 0 {
            return Err(HashError::Malformed(format!(
                "r={r} and p={p} must be positive"
            )));
        }
        let log_n = n.trailing_zeros();
        let memory = 128 * u64::from(n) * u64::from(r);
        let work = u64::from(n) * u64::from(r) * u64::from(p);
        if log_n > MAX_LOG_N
            || r > MAX_R
            || p > MAX_P
            || memory > MAX_MEMORY_BYTES
            || work > MAX_WORK
        {
            return Err(HashError::ParamsTooLarge { n, r, p });
        }
        // log_n <= 20 fits u8; the scrypt crate re-checks its own overflow rules.
        scrypt::Params::new(log_n as u8, r, p)
            .map_err(|_| HashError::Malformed(format!("scrypt refused N={n}, r={r}, p={p}")))
    }
}

/// Makes a new hash (N=16384, r=8, p=1, 16-byte salt from the OS RNG), standard base64.
///
/// # Panics
/// Only if the operating system's random number generator fails; use
/// [`try_hash_password`] to get that as an error instead.
pub fn hash_password(password: &[u8]) -> String {
    match try_hash_password(password, HashParams::STANDARD) {
        Ok(hash) => hash,
        Err(e) => panic!("cannot hash a password: {e}"),
    }
}

/// Makes a new hash with the given parameters (which must be within the bounds).
pub fn try_hash_password(password: &[u8], params: HashParams) -> Result<String, HashError> {
    let scrypt_params = params.to_scrypt()?;
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| HashError::Rng(e.to_string()))?;
    let key = derive(password, &salt, &scrypt_params)?;
    Ok(STANDARD.encode(assemble(&key, &salt, params)))
}

/// Checks `password` against a stored base64 hash (surrounding whitespace is ignored).
pub fn verify_password(hash_b64: &str, password: &[u8]) -> Result<(), HashError> {
    let decoded = decode(hash_b64)?;
    let params = read_params(&decoded);
    let scrypt_params = params.to_scrypt()?;
    let key = derive(password, &decoded[KEY_LEN..SALT_END], &scrypt_params)?;
    if bool::from(key.ct_eq(&decoded[..KEY_LEN])) {
        Ok(())
    } else {
        Err(HashError::Mismatch)
    }
}

/// Reads the parameters of a stored hash after checking its shape and checksum.
pub fn hash_params(hash_b64: &str) -> Result<HashParams, HashError> {
    decode(hash_b64).map(|decoded| read_params(&decoded))
}

/// Decodes, checks the length and the checksum.
fn decode(hash_b64: &str) -> Result<[u8; HASH_LEN], HashError> {
    let text = hash_b64.trim();
    if text.len() > MAX_ENCODED_LEN {
        return Err(HashError::Malformed(format!(
            "{} characters of base64, expected {}",
            text.len(),
            HASH_LEN.div_ceil(3) * 4
        )));
    }
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| HashError::Malformed(format!("not standard base64 ({e})")))?;
    let decoded: [u8; HASH_LEN] = bytes.as_slice().try_into().map_err(|_| {
        HashError::Malformed(format!(
            "decodes to {} bytes, expected {HASH_LEN}",
            bytes.len()
        ))
    })?;
    let checksum = Sha256::digest(&decoded[..CHECKED_LEN]);
    if !bool::from(checksum.as_slice().ct_eq(&decoded[CHECKED_LEN..])) {
        return Err(HashError::Malformed(
            "SHA-256 checksum does not match".into(),
        ));
    }
    Ok(decoded)
}

/// N, r, p as stored. Negative int32 values become huge u32 and fail the bounds.
fn read_params(decoded: &[u8; HASH_LEN]) -> HashParams {
    let int = |at: usize| {
        u32::from_le_bytes([
            decoded[at],
            decoded[at + 1],
            decoded[at + 2],
            decoded[at + 3],
        ])
    };
    HashParams {
        n: int(SALT_END),
        r: int(SALT_END + 4),
        p: int(SALT_END + 8),
    }
}

fn derive(
    password: &[u8],
    salt: &[u8],
    params: &scrypt::Params,
) -> Result<[u8; KEY_LEN], HashError> {
    let mut key = [0u8; KEY_LEN];
    scrypt::scrypt(password, salt, params, &mut key)
        .map_err(|_| HashError::Malformed("scrypt refused the output length".into()))?;
    Ok(key)
}

fn assemble(key: &[u8; KEY_LEN], salt: &[u8; SALT_LEN], params: HashParams) -> Vec<u8> {
    let mut out = Vec::with_capacity(HASH_LEN);
    out.extend_from_slice(key);
    out.extend_from_slice(salt);
    for v in [params.n, params.r, params.p] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters keep the unit tests fast; the vectors cover the standard ones.
    const CHEAP: HashParams = HashParams { n: 16, r: 1, p: 1 };

    #[test]
    fn round_trip_with_cheap_params() {
        let hash = try_hash_password(b"secret", CHEAP).unwrap();
        assert_eq!(STANDARD.decode(&hash).unwrap().len(), HASH_LEN);
        verify_password(&hash, b"secret").unwrap();
        assert!(matches!(
            verify_password(&hash, b"Secret"),
            Err(HashError::Mismatch)
        ));
        assert_eq!(hash_params(&hash).unwrap(), CHEAP);
    }

    #[test]
    fn standard_hash_verifies_and_salts_differ() {
        let a = hash_password(b"pw");
        let b = hash_password(b"pw");
        assert_ne!(a, b, "two hashes of one password must use different salts");
        verify_password(&a, b"pw").unwrap();
        assert_eq!(hash_params(&a).unwrap(), HashParams::STANDARD);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let hash = try_hash_password(b"x", CHEAP).unwrap();
        verify_password(&format!(" {hash}\n"), b"x").unwrap();
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in ["", "=", "!!!!", "AAAA", &"A".repeat(10_000), "é"] {
            assert!(
                matches!(verify_password(input, b"x"), Err(HashError::Malformed(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn bounds_accept_standard_and_reject_absurd() {
        assert!(HashParams::STANDARD.to_scrypt().is_ok());
        assert!(
            HashParams {
                n: 1 << 20,
                r: 2,
                p: 1
            }
            .to_scrypt()
            .is_ok()
        );
        let too_large = [
            (1 << 21, 1, 1),
            (1 << 20, 8, 1),
            (16384, 33, 1),
            (16384, 8, 17),
            (1 << 17, 16, 16),
            (1 << 31, 8, 1), // int32 -2^31 read as u32
            (16384, u32::MAX, 1),
        ];
        for (n, r, p) in too_large {
            let err = HashParams { n, r, p }.to_scrypt().unwrap_err();
            assert!(
                matches!(err, HashError::ParamsTooLarge { .. }),
                "{n} {r} {p}: {err}"
            );
        }
        for (n, r, p) in [
            (0, 8, 1),
            (1, 8, 1),
            (3, 8, 1),
            (16384, 0, 1),
            (16384, 8, 0),
        ] {
            let err = HashParams { n, r, p }.to_scrypt().unwrap_err();
            assert!(matches!(err, HashError::Malformed(_)), "{n} {r} {p}: {err}");
        }
    }

    #[test]
    fn errors_never_show_the_password() {
        let hash = try_hash_password(b"hunter2", CHEAP).unwrap();
        let err = verify_password(&hash, b"hunter3-oops").unwrap_err();
        assert!(!err.to_string().contains("hunter"));
    }
}
