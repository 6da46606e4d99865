//! Configuration: the Go Perseus `config.json` keys, loaded, overridden from the environment and validated.

mod types;
pub use types::*;
