//! Secret backends: decrypting destination passwords (AWS KMS).

pub mod kms;
