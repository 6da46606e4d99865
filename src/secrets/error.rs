//! Errors of the secret backends, worded so that no plaintext ever reaches them:
//! service messages are scrubbed of it, and unreadable responses (a Decrypt response
//! body carries the plaintext) are not displayed at all.

use std::fmt;

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Why a secret could not be encrypted or decrypted. No variant carries the plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("KMS request failed: {0}")]
    Kms(String),
    #[error("ciphertext is not valid base64: {0}")]
    Base64(String),
    #[error("decrypted secret is not valid UTF-8")]
    NotUtf8,
    #[error("invalid KMS request: {0}")]
    Invalid(String),
    #[error("invalid AWSSettings: {0}")]
    Settings(String),
}

/// One line an operator can act on: the service's error code and message, or the
/// transport failure. A response that could not be parsed is not shown, because a
/// Decrypt response body carries the plaintext.
pub(super) fn describe<E, R>(operation: &str, err: SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{operation}: {}: {}",
                e.code().unwrap_or("unknown error"),
                e.message().unwrap_or("no message")
            )
        }
        SdkError::ResponseError(_) => {
            format!("{operation}: KMS sent a response that could not be read")
        }
        _ => format!("{operation}: {}", DisplayErrorContext(&err)),
    }
}

/// Removes the plaintext should a service echo it in an error message.
pub(super) fn scrub(message: String, plaintext: &[u8]) -> String {
    match std::str::from_utf8(plaintext) {
        Ok(text) if !text.trim().is_empty() => message.replace(text, "<redacted>"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_an_echoed_plaintext() {
        let msg = "Value 'hunter2' at 'plaintext' failed".to_owned();
        assert_eq!(
            scrub(msg, b"hunter2"),
            "Value '<redacted>' at 'plaintext' failed"
        );
    }
}
