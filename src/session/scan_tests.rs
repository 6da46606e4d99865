//! Unit tests of the frame scanners: renaming, injected Parses, stale plans, the hidden
//! retry and refused pinning, on hand-made frames without a server.

use super::*;

use crate::proto::frame::test_frame as frame;

struct Fixture {
    t: TxnState,
    st: ClientState,
    schema: Option<std::sync::Arc<str>>,
    params: HashMap<String, String>,
    fitted: Option<crate::pool::server::FittedSettings>,
    prepared: PreparedSet,
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            t: TxnState::default(),
            st: ClientState {
                max_message: 1 << 20,
                ..Default::default()
            },
            schema: Some("a".into()),
            params: HashMap::new(),
            fitted: None,
            prepared: PreparedSet::new(10),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    fn client(&mut self, bytes: &[u8]) -> ClientScan {
        let mut input = BytesMut::from(bytes);
        let out = ClientOut {
            to_server: &mut self.to_server,
            to_client: &mut self.to_client,
        };
        let srv = ServerView {
            schema: &mut self.schema,
            params: &mut self.params,
            fitted: &mut self.fitted,
            prepared: &mut self.prepared,
        };
        scan_client(&mut input, out, &mut self.t, &mut self.st, srv).unwrap()
    }

    fn server(&mut self, bytes: &[u8]) -> bool {
        let mut input = BytesMut::from(bytes);
        let srv = ServerView {
            schema: &mut self.schema,
            params: &mut self.params,
            fitted: &mut self.fitted,
            prepared: &mut self.prepared,
        };
        scan_server(
            &mut input,
            &mut self.to_client,
            &mut self.t,
            &mut self.st,
            srv,
        )
        .unwrap()
    }
}

#[test]
fn query_then_ready_is_a_boundary() {
    let mut f = Fixture::new();
    f.client(&frame(b'Q', b"select 1\0"));
    assert_eq!(f.t.pending, 1);
    assert!(f.server(&[frame(b'C', b"SELECT 1\0"), frame(b'Z', b"I")].concat()));
    assert_eq!(f.to_client.len(), 20);
}

#[test]
fn open_transaction_and_unsynced_batches_hold_the_connection() {
    let mut f = Fixture::new();
    f.client(&[frame(b'Q', b"begin\0"), frame(b'P', b"\0select 1\0\0\0")].concat());
    assert!(!f.server(&frame(b'Z', b"T")));
}

#[test]
fn search_path_changes_forget_the_schema() {
    let mut f = Fixture::new();
    let q = frame(b'Q', b"set search_path to b\0");
    f.client(&q[..7]);
    assert!(f.to_server.is_empty());
    let mut f = Fixture::new();
    f.client(&q);
    assert_eq!(f.schema, None);
}

#[test]
fn named_statements_are_renamed_and_reparse_is_answered_locally() {
    let mut f = Fixture::new();
    let parse = frame(b'P', b"s1\0select 1\0\0\0");
    f.client(&[parse.clone(), frame(b'S', b"")].concat());
    assert!(
        f.to_server.windows(8).any(|w| w == b"perseus_"),
        "renamed on the wire"
    );
    assert!(!f.to_server.windows(3).any(|w| w == b"s1\0"));
    assert!(f.server(&[frame(b'1', b""), frame(b'Z', b"I")].concat()));
    // The same statement again on this connection: answered without the server.
    f.to_server.clear();
    f.to_client.clear();
    f.t = TxnState::default();
    f.client(&[parse, frame(b'S', b"")].concat());
    assert_eq!(&f.to_server[..], &frame(b'S', b"")[..]);
    // Nothing is ahead of it, so the pooler's ParseComplete is due at once.
    assert_eq!(&f.to_client[..], &frame(b'1', b"")[..]);
    assert!(f.server(&frame(b'Z', b"I")));
    assert_eq!(
        &f.to_client[..],
        &[frame(b'1', b""), frame(b'Z', b"I")].concat()[..]
    );
}

#[test]
fn bind_on_a_fresh_connection_injects_the_parse() {
    let mut f = Fixture::new();
    f.client(&frame(b'P', b"s1\0select 1\0\0\0"));
    f.prepared.clear();
    f.to_server.clear();
    f.t = TxnState::default();
    f.client(&[frame(b'B', b"\0s1\0\0\0\0\0\0\0"), frame(b'S', b"")].concat());
    assert_eq!(f.to_server[0], b'P', "the Parse goes first");
    f.server(&[frame(b'1', b""), frame(b'2', b""), frame(b'Z', b"I")].concat());
    assert_eq!(
        &f.to_client[..],
        &[frame(b'2', b""), frame(b'Z', b"I")].concat()[..]
    );
}

#[test]
fn after_a_plan_change_a_pipelined_reparse_replaces_the_statement() {
    let mut f = Fixture::new();
    let parse = frame(b'P', b"s1\0select 1\0\0\0");
    f.client(&[parse.clone(), frame(b'S', b"")].concat());
    f.server(&[frame(b'1', b""), frame(b'Z', b"I")].concat());
    f.t = TxnState::default();
    let run = [
        frame(b'B', b"\0s1\0\0\0\0\0\0\0"),
        frame(b'E', b"\0\0\0\0\0"),
        frame(b'S', b""),
    ];
    f.client(&run.concat());
    f.server(&frame(
        b'E',
        b"SERROR\0C0A000\0Mcached plan must not change result type\0\0",
    ));
    // The client reacts to the error before its ReadyForQuery has come back.
    f.to_server.clear();
    f.client(&[parse, frame(b'S', b"")].concat());
    assert_eq!(f.to_server[0], b'C', "the stale statement is closed first");
    assert!(
        f.to_server.windows(2).any(|w| w == b"P\0"),
        "and parsed again"
    );
}

#[test]
fn a_hidden_plan_failure_is_retried_only_after_its_ready_for_query() {
    let mut f = Fixture::new();
    f.client(&[frame(b'P', b"s1\0select 1\0\0\0"), frame(b'S', b"")].concat());
    f.server(&[frame(b'1', b""), frame(b'Z', b"I")].concat());
    f.t = TxnState::default();
    f.to_client.clear();
    let run = [
        frame(b'B', b"\0s1\0\0\0\0\0\0\0"),
        frame(b'D', b"P\0"),
        frame(b'E', b"\0\0\0\0\0"),
        frame(b'S', b""),
    ];
    f.client(&run.concat());
    // The error and its ReadyForQuery arrive in separate reads.
    assert!(!f.server(&frame(
        b'E',
        b"SERROR\0C0A000\0Mcached plan must not change result type\0\0",
    )));
    assert!(f.to_client.is_empty(), "the error is hidden");
    assert!(
        f.t.replay.take_retry().is_none(),
        "the server still skips to Sync"
    );
    assert!(
        !f.server(&frame(b'Z', b"I")),
        "not a boundary: the batch goes again"
    );
    assert!(f.to_client.is_empty(), "its ReadyForQuery is hidden too");
    let frames = f.t.replay.take_retry().expect("due now");
    assert_eq!(&frames[..], &run.concat()[..]);
}

#[test]
fn pinning_sql_is_failed_on_the_server_and_explained_when_refused() {
    let mut f = Fixture::new();
    f.st.refuse_pinning = true;
    f.client(&frame(b'Q', b"listen chan\0"));
    assert_eq!(&f.to_server[..], &frame(b'Q', b"perseus_refused\0")[..]);
    assert_eq!(f.st.pinned, None);
    f.server(
        &[
            frame(b'E', b"SERROR\0C42601\0Msyntax\0\0"),
            frame(b'Z', b"I"),
        ]
        .concat(),
    );
    assert!(f.to_client.windows(5).any(|w| w == b"0A000"));
    assert!(f.to_client.windows(6).any(|w| w == b"LISTEN"));
    // A prepared statement that would pin is bound to a statement that does not exist.
    f.to_server.clear();
    f.t = TxnState::default();
    f.client(&frame(b'P', b"s1\0select pg_advisory_lock(1)\0\0\0"));
    f.client(&[frame(b'B', b"\0s1\0\0\0\0\0\0\0"), frame(b'S', b"")].concat());
    assert!(f.to_server.windows(23).any(|w| w == REFUSED_STATEMENT));
    assert_eq!(f.st.pinned, None);
}

#[test]
fn unknown_statement_names_never_reach_a_real_statement() {
    let mut f = Fixture::new();
    f.client(&frame(b'B', b"\0perseus_0123\0\0\0\0\0\0\0"));
    assert!(f.to_server.windows(16).any(|w| w == b"perseus_unknown_"));
}

#[test]
fn terminate_stops_forwarding() {
    let mut f = Fixture::new();
    assert_eq!(f.client(&frame(b'X', b"")), ClientScan::Terminate);
    assert!(f.to_server.is_empty());
}
