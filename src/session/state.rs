//! What the pooler tracks about one client across the transactions it runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::extended::Pending;
use super::stmts::Prepared;

/// Per-client state that outlives any single server connection.
#[derive(Debug, Default)]
pub struct ClientState {
    pub schema: String,
    /// Session settings (lower-case names) every server connection must carry for this client.
    pub wanted: BTreeMap<String, String>,
    /// The client's named prepared statements, by the client's name.
    pub stmts: HashMap<Vec<u8>, Arc<Prepared>>,
    /// The last unnamed Parse, replayed when a later batch binds it on another connection.
    pub unnamed: Option<(Vec<u8>, crate::proto::sql::Effects)>,
    /// Why this client is pinned to its server connection for the rest of the session.
    pub pinned: Option<&'static str>,
    /// Settings the client's SQL may have changed in the transaction just run.
    pub touched: std::collections::BTreeSet<String>,
    /// The client ran RESET ALL / DISCARD ALL.
    pub reset_all: bool,
    /// `wanted` as it was right after login, what RESET ALL returns to.
    pub startup_wanted: BTreeMap<String, String>,
    pub max_message: usize,
    /// ClientSettings.RefusePinning as of this checkout.
    pub refuse_pinning: bool,
}

/// Per-checkout protocol bookkeeping: when is the server connection free again?
#[derive(Debug)]
pub struct TxnState {
    /// Query, Sync and FunctionCall messages sent whose ReadyForQuery has not come back.
    pub pending: u32,
    /// Status byte of the last ReadyForQuery.
    pub status: u8,
    /// Extended-protocol messages forwarded after the last Sync: the server holds unnamed
    /// statements or portals for this client until a Sync closes the batch.
    pub unsynced: bool,
    /// Bytes of a partly forwarded client message still to pass through.
    pub client_remaining: usize,
    /// Same for the server direction.
    pub server_remaining: usize,
    /// Responses still expected, and the pooler's own answers waiting their turn.
    pub queue: Pending,
    /// The client's unnamed statement was parsed on this connection during this checkout.
    pub unnamed_here: bool,
    /// Queries, Syncs and function calls forwarded (for metrics).
    pub requests: u64,
    /// The current batch, kept to retry it once if DDL invalidated its statement's plan.
    pub replay: super::replay::Replay,
}

impl Default for TxnState {
    fn default() -> Self {
        TxnState {
            pending: 0,
            status: b'I',
            unsynced: false,
            client_remaining: 0,
            server_remaining: 0,
            queue: Pending::default(),
            unnamed_here: false,
            requests: 0,
            replay: Default::default(),
        }
    }
}

impl TxnState {
    /// Back to the state of a fresh checkout, keeping allocations.
    pub fn reset(&mut self) {
        let queue = std::mem::take(&mut self.queue);
        let replay = std::mem::take(&mut self.replay);
        *self = TxnState {
            queue,
            replay,
            ..TxnState::default()
        };
        self.queue.clear();
        self.replay.reset();
    }

    /// The connection holds nothing of this client's: no transaction, batch or partial message.
    pub fn at_boundary(&self) -> bool {
        self.pending == 0
            && self.status == b'I'
            && !self.unsynced
            && self.client_remaining == 0
            && self.server_remaining == 0
            && self.queue.is_empty()
    }
}

impl ClientState {
    pub fn may_release(&self) -> bool {
        self.pinned.is_none()
    }
}
