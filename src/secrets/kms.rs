//! AWS KMS: encrypting (encpass) and decrypting (daemon) destination passwords.

use crate::config::AwsSettings;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("KMS request failed: {0}")]
    Kms(String),
    #[error("ciphertext is not valid base64: {0}")]
    Base64(String),
    #[error("decrypted secret is not valid UTF-8")]
    NotUtf8,
}

/// A KMS client built from `AWSSettings` (explicit keys, else the default AWS chain).
#[derive(Clone, Debug)]
pub struct Kms {}

impl Kms {
    pub async fn new(_aws: &AwsSettings) -> Self {
        Kms {}
    }
    /// Returns the standard base64 of the ciphertext blob.
    pub async fn encrypt(&self, _key_arn: &str, _plaintext: &[u8]) -> Result<String, SecretError> {
        Err(SecretError::Kms("not implemented yet".into()))
    }
    /// Takes the standard base64 of a ciphertext blob, returns the plaintext.
    pub async fn decrypt(&self, _ciphertext_b64: &str) -> Result<String, SecretError> {
        Err(SecretError::Kms("not implemented yet".into()))
    }
}
