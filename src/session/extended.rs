//! Matching server responses to the client messages that caused them, so the pooler can
//! answer some messages itself (a Parse already prepared, a Close it keeps cached) and hide
//! the responses to messages it injected, without reordering anything the client sees.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

/// What a client (or injected) message is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Parse,
    Bind,
    Close,
    Describe,
    Execute,
    /// Sync, Query and FunctionCall: all end with ReadyForQuery.
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server answers and the answer goes to the client.
    Forward,
    /// The server answers a message the pooler injected; the client never sees it.
    Swallow,
    /// The pooler answers with this one-byte-tag message when the entry reaches the front.
    Synthetic(u8),
    /// The pooler made the server fail this message (it would have pinned the session while
    /// pinning is refused); the server's error is replaced by one naming the reason.
    Refused(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub expect: Expect,
    pub mode: Mode,
    /// Server statement name a Parse creates, forgotten again if the Parse never runs.
    pub parsed: Option<Vec<u8>>,
}

impl Entry {
    pub fn forward(expect: Expect) -> Self {
        Entry {
            expect,
            mode: Mode::Forward,
            parsed: None,
        }
    }
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    Drop,
    /// An error the pooler provoked: tell the client why instead.
    Refused(&'static str),
}

#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Entry>,
    /// After an error the server skips everything until Sync; so do we.
    skipping: bool,
}

fn terminal(expect: Expect, tag: u8) -> bool {
    match expect {
        Expect::Parse => tag == b'1',
        Expect::Bind => tag == b'2',
        Expect::Close => tag == b'3',
        Expect::Describe => matches!(tag, b'T' | b'n'),
        Expect::Execute => matches!(tag, b'C' | b'I' | b's'),
        Expect::Ready => tag == b'Z',
    }
}

impl Pending {
    pub fn clear(&mut self) {
        self.queue.clear();
        self.skipping = false;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the server is discarding messages until the next Sync.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Queues an expectation; returns false when the server will ignore the message.
    pub fn push(&mut self, e: Entry, to_client: &mut BytesMut) -> bool {
        if self.skipping {
            if e.expect != Expect::Ready {
                return false;
            }
            self.skipping = false;
        }
        self.queue.push_back(e);
        self.emit_synthetic(to_client);
        true
    }

    /// Writes the pooler's own answers that are now due; call after forwarding a server message.
    pub fn emit_synthetic(&mut self, to_client: &mut BytesMut) {
        while let Some(Entry {
            mode: Mode::Synthetic(tag),
            ..
        }) = self.queue.front()
        {
            to_client.put_u8(*tag);
            to_client.put_i32(4);
            self.queue.pop_front();
        }
    }

    /// Decides about one server message by its tag. `unprepare` collects server statement
    /// names whose Parse the server skipped after an error.
    pub fn on_server(&mut self, tag: u8, unprepare: &mut Vec<Vec<u8>>) -> Action {
        let Some(front) = self.queue.front() else {
            return Action::Forward;
        };
        if tag == b'E' {
            let action = match front.mode {
                Mode::Refused(reason) => Action::Refused(reason),
                _ => Action::Forward,
            };
            if front.expect != Expect::Ready {
                while let Some(e) = self.queue.front() {
                    if e.expect == Expect::Ready {
                        break;
                    }
                    let e = self.queue.pop_front().expect("front exists");
                    unprepare.extend(e.parsed);
                }
                self.skipping = self.queue.is_empty();
            }
            return action;
        }
        if !terminal(front.expect, tag) {
            return Action::Forward;
        }
        let e = self.queue.pop_front().expect("front exists");
        match e.mode {
            Mode::Swallow => Action::Drop,
            _ => Action::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth(tag: u8) -> Entry {
        Entry {
            expect: Expect::Parse,
            mode: Mode::Synthetic(tag),
            parsed: None,
        }
    }

    #[test]
    fn synthetic_answers_wait_their_turn() {
        let mut p = Pending::default();
        let mut out = BytesMut::new();
        p.push(Entry::forward(Expect::Bind), &mut out);
        p.push(synth(b'1'), &mut out);
        p.push(Entry::forward(Expect::Ready), &mut out);
        assert!(out.is_empty());
        let mut un = Vec::new();
        assert_eq!(p.on_server(b'2', &mut un), Action::Forward);
        assert!(out.is_empty(), "the server's answer goes first");
        p.emit_synthetic(&mut out);
        assert_eq!(&out[..], b"1\0\0\0\x04");
        assert_eq!(p.on_server(b'Z', &mut un), Action::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn injected_answers_are_dropped() {
        let mut p = Pending::default();
        let mut out = BytesMut::new();
        let mut un = Vec::new();
        p.push(
            Entry {
                expect: Expect::Parse,
                mode: Mode::Swallow,
                parsed: Some(b"x".to_vec()),
            },
            &mut out,
        );
        p.push(Entry::forward(Expect::Bind), &mut out);
        assert_eq!(p.on_server(b'1', &mut un), Action::Drop);
        assert_eq!(p.on_server(b'2', &mut un), Action::Forward);
    }

    #[test]
    fn errors_skip_to_sync_and_forget_parses() {
        let mut p = Pending::default();
        let mut out = BytesMut::new();
        let mut un = Vec::new();
        p.push(Entry::forward(Expect::Bind), &mut out);
        p.push(
            Entry {
                expect: Expect::Parse,
                mode: Mode::Forward,
                parsed: Some(b"s".to_vec()),
            },
            &mut out,
        );
        p.push(synth(b'3'), &mut out);
        p.push(Entry::forward(Expect::Ready), &mut out);
        assert_eq!(p.on_server(b'E', &mut un), Action::Forward);
        assert_eq!(un, vec![b"s".to_vec()]);
        assert!(out.is_empty(), "no synthetic answer after an error");
        assert_eq!(p.on_server(b'Z', &mut un), Action::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn error_before_sync_arrives_skips_later_messages() {
        let mut p = Pending::default();
        let mut out = BytesMut::new();
        let mut un = Vec::new();
        p.push(Entry::forward(Expect::Execute), &mut out);
        p.on_server(b'E', &mut un);
        assert!(p.skipping());
        assert!(!p.push(synth(b'1'), &mut out));
        assert!(out.is_empty());
        assert!(p.push(Entry::forward(Expect::Ready), &mut out));
        assert!(!p.skipping());
    }
}
