//! Authentication: the easy-scrypt password hash, the tenant directory, and the verifier.

pub mod directory;
pub mod hash;
pub mod limiter;
pub mod verifier;
