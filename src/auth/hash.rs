//! The easy-scrypt v1 password hash that the Go Perseus stores in `source_pass_hashed`.

/// Why a stored hash did not accept a password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password does not match")]
    Mismatch,
    #[error("malformed hash: {0}")]
    Malformed(String),
}

/// Makes a new hash (N=16384, r=8, p=1, random salt), standard base64.
pub fn hash_password(_password: &[u8]) -> String {
    String::new()
}

/// Checks `password` against a stored base64 hash.
pub fn verify_password(_hash_b64: &str, _password: &[u8]) -> Result<(), HashError> {
    Err(HashError::Malformed("not implemented yet".into()))
}
