//! Every integration test in one binary: one link of the dependency tree instead of one per
//! test file keeps the build small and fast (CI disks are small). Each module is one former
//! test file; nextest still runs every test in its own process.
//! `tests/alloc_budget.rs` stays a binary of its own because it installs a global allocator.

// Shared by the test modules below.
mod support;
mod world;

mod admin;
mod bad_input;
mod cli;
mod config;
mod config_dsn;
mod datapath_cancel;
mod datapath_clients;
mod datapath_concurrency;
mod datapath_errors;
mod datapath_isolation;
mod datapath_kill;
mod datapath_protocol;
mod datapath_smoke;
mod handover;
mod harness_smoke;
mod hash_vectors;
mod idle_memory;
mod metrics;
mod migrations;
mod pool_lifetime;
mod prepared;
mod proto_props;
mod python_client;
mod reload;
mod resilience_auth_db;
mod resilience_auth_limit;
mod resilience_backend_kill;
mod resilience_destination;
mod resilience_kms;
mod runtime_single_thread;
mod server_tls;
mod session_state;
mod shutdown;
mod tcp_keepalive;
mod tls;
