//! Secret backends: decrypting destination passwords (AWS KMS).

mod error;
pub mod kms;

pub use error::SecretError;
