//! What the pooler tracks about one client across the transactions it runs.

use std::collections::{BTreeMap, HashMap, btree_map};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::extended::Pending;
use super::stmts::Prepared;

/// Per-client state that outlives any single server connection.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Shared with the pool's queue whenever this client waits for a connection.
    pub schema: Arc<str>,
    /// Session settings (lower-case names) every server connection must carry for this client.
    pub wanted: Settings,
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
    pub startup_wanted: Settings,
    pub max_message: usize,
    /// ClientSettings.RefusePinning as of this checkout.
    pub refuse_pinning: bool,
}

impl ClientState {
    /// A freshly logged-in client wanting `wanted`, which is also what RESET ALL returns to.
    /// Every field is spelled out: `..Default::default()` would build (and drop) two empty
    /// settings maps per login.
    pub fn new(schema: Arc<str>, max_message: usize, wanted: Settings) -> ClientState {
        ClientState {
            schema,
            startup_wanted: wanted.clone(),
            wanted,
            stmts: HashMap::new(),
            unnamed: None,
            pinned: None,
            touched: Default::default(),
            reset_all: false,
            max_message,
            refuse_pinning: false,
        }
    }
}

/// Session settings by lower-case name, shared copy-on-write: right after login a client's
/// `wanted` and `startup_wanted` are one map, and most clients never change a setting, so
/// an idle client holds one copy instead of two. Reads go through `Deref`; any mutable use
/// (`DerefMut`) first makes the map this owner's own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settings(Arc<BTreeMap<String, String>>);

impl Deref for Settings {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

impl<'a> IntoIterator for &'a Settings {
    type Item = (&'a String, &'a String);
    type IntoIter = btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<BTreeMap<String, String>> for Settings {
    fn from(map: BTreeMap<String, String>) -> Self {
        Settings(Arc::new(map))
    }
}

impl Settings {
    /// Whether `self` and `other` are the same shared map (no copy was made).
    pub fn shares_with(&self, other: &Settings) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The shared map itself: a server connection keeps it to recognise clients it fits.
    pub fn shared(&self) -> &Arc<BTreeMap<String, String>> {
        &self.0
    }

    /// Takes the shared map another owner already holds (see `DestPool::intern_settings`).
    pub fn from_shared(map: Arc<BTreeMap<String, String>>) -> Self {
        Settings(map)
    }

    /// Sets `name` unless it already has `value`: an unchanged map stays shared.
    pub fn set(&mut self, name: &str, value: &str) {
        if self.get(name).map(String::as_str) != Some(value) {
            self.insert(name.to_owned(), value.to_owned());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
            .into()
    }

    #[test]
    fn a_copy_is_shared_until_one_side_changes() {
        let startup = settings(&[("application_name", "app"), ("timezone", "UTC")]);
        let mut wanted = startup.clone();
        assert!(wanted.shares_with(&startup));
        assert_eq!(wanted.get("timezone").map(String::as_str), Some("UTC"));

        wanted.insert("timezone".into(), "Europe/Paris".into());
        assert!(
            !wanted.shares_with(&startup),
            "a change must not reach the other copy"
        );
        assert_eq!(startup.get("timezone").map(String::as_str), Some("UTC"));
        assert_eq!(
            wanted.get("timezone").map(String::as_str),
            Some("Europe/Paris")
        );

        // Back to the startup values, as RESET ALL does.
        wanted.retain(|k, _| k == "application_name");
        for (k, v) in &startup {
            wanted.insert(k.clone(), v.clone());
        }
        assert_eq!(wanted, startup);
    }
}
