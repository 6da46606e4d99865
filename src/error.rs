//! The edge where errors become what a client sees: an ErrorResponse with a SQLSTATE and a
//! message an operator can act on. Secrets never get here.

use bytes::BytesMut;

use crate::pool::{CheckoutError, RouteError};
use crate::proto::ProtoError;
use crate::proto::backend;
use crate::session::tenant::TenantError;

/// Everything that can end or refuse a client session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtoError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("authentication database unavailable, try again later")]
    DirectoryUnavailable,
    #[error("cannot route tenant: {0}")]
    Route(#[from] RouteError),
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error("server connection failed: {0}")]
    Server(#[from] crate::pool::ServerError),
    #[error("server connection lost during the transaction")]
    ServerLost,
    #[error("TLS is required: connect with sslmode=require")]
    TlsRequired,
    #[error("the server is shutting down")]
    Shutdown,
    #[error("{0}")]
    TooManyClients(String),
    #[error("closing connection idle for more than {0:?}")]
    IdleTimeout(std::time::Duration),
    #[error("terminating connection: idle in transaction for more than {0:?}")]
    IdleInTransaction(std::time::Duration),
    #[error("login timed out after {0:?}")]
    LoginTimeout(std::time::Duration),
    #[error("expected {expected}, got message type {got:?}")]
    Unexpected { expected: &'static str, got: char },
    #[error("{0}")]
    NotSupported(String),
    #[error(transparent)]
    Throttled(#[from] crate::auth::limiter::Throttled),
}

impl ClientError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ClientError::Protocol(_) | ClientError::Unexpected { .. } => "08P01",
            ClientError::Tenant(TenantError::NoUser) => "28000",
            ClientError::Tenant(TenantError::NoDatabase) => "3D000",
            ClientError::Tenant(TenantError::NoSchema) => "3F000",
            ClientError::Tenant(_) => "08P01",
            ClientError::AuthFailed(_) => "28P01",
            ClientError::DirectoryUnavailable | ClientError::Route(_) => "08001",
            ClientError::Checkout(CheckoutError::WaitTimeout { .. }) => "53300",
            ClientError::Checkout(_) | ClientError::Server(_) => "08001",
            ClientError::ServerLost => "08006",
            ClientError::Shutdown => "57P01",
            ClientError::TlsRequired => "28000",
            ClientError::TooManyClients(_) => "53300",
            ClientError::IdleTimeout(_) => "57P05",
            // PostgreSQL's own code for idle_in_transaction_session_timeout.
            ClientError::IdleInTransaction(_) => "25P03",
            ClientError::LoginTimeout(_) => "08P01",
            ClientError::NotSupported(_) => "0A000",
            ClientError::Throttled(_) => "28000",
        }
    }

    /// Writes the FATAL ErrorResponse that ends the session.
    pub fn write_fatal(&self, out: &mut BytesMut) {
        backend::error(out, "FATAL", self.sqlstate(), &self.to_string());
    }
}
