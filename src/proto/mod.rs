//! PostgreSQL wire protocol framing and the few typed messages the pooler reads or builds; no I/O here.
