//! PostgreSQL wire protocol framing and the few typed messages the pooler reads or builds; no I/O here.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sql;
mod sql_prefilter;
pub mod startup;

pub use frame::{Header, ProtoError};
