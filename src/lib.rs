//! Perseus: a tenant-routing PostgreSQL connection pooler. The library holds
//! every piece so the daemon and the CLIs (genhash, encpass) share one code base.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod metrics;
pub mod migrate;
pub mod net;
pub mod notify;
pub mod pool;
pub mod proto;
pub mod secrets;
pub mod session;
