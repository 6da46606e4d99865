//! Client sessions: startup and authentication, then transaction-mode forwarding.

pub mod accept;
pub mod cancel;
pub mod checkout;
pub mod client;
pub mod extended;
pub mod forward;
pub mod limits;
pub mod local;
pub mod registry;
pub mod replay;
pub mod scan;
pub mod startup;
pub mod state;
pub mod stmts;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::directory::Directory;
use crate::auth::verifier::Verifier;
use crate::pool::Registry;
use cancel::CancelMap;
use limits::ClientLimits;
use tokio_util::sync::CancellationToken;

/// What every session shares: the tenant directory, verifier, pools and cancel keys.
pub struct Shared {
    pub directory: Directory,
    pub verifier: Verifier,
    pub registry: Registry,
    pub cancel: CancelMap,
    pub login_timeout: Duration,
    /// Disconnect clients idle this long between transactions; zero disables.
    pub idle_timeout: Duration,
    /// Disconnect clients silent this long while holding a server connection; zero disables.
    pub idle_in_transaction_timeout: Duration,
    pub max_message: usize,
    /// ClientSettings.RefusePinning, changed by SIGHUP.
    pub refuse_pinning: std::sync::atomic::AtomicBool,
    pub limits: ClientLimits,
    /// Soft stop: clients leave at their next transaction boundary.
    pub shutdown: CancellationToken,
    /// Hard stop: transactions still in flight are cut off.
    pub hard_stop: CancellationToken,
    pub tls: crate::net::ClientTls,
    /// Counters and gauges the session updates; read by the metrics endpoint.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Logged-in clients, with the PAUSE/RESUME gates and KILL switches of the admin console.
    pub clients: registry::ClientRegistry,
    pub admin: crate::admin::Admin,
    /// Failed logins per source address; blocked addresses are refused before any scrypt work.
    pub auth_limit: crate::auth::limiter::AuthLimiter,
}

pub type SharedRef = Arc<Shared>;
