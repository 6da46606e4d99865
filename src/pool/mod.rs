//! Server-side pooling: raw server connections, one pool per destination, the registry.

pub mod dest_pool;
pub mod destination;
mod live_settings;
pub mod opener;
pub mod prepared;
pub mod registry;
pub mod server;
mod settings_memo;
pub mod slots;
pub mod stats;
pub mod stream;
pub mod tls;

pub use dest_pool::{CheckoutError, DestPool, PooledConn};
pub use destination::{BadDestHost, DestKey, Destination};
pub use registry::{Registry, RouteError};
pub use server::{ServerConn, ServerError};
pub use slots::PoolStatus;
pub use stream::ServerStream;
pub use tls::{ServerTls, ServerTlsError, ServerTlsSet};
