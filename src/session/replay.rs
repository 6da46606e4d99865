//! Transparent retry of a batch whose statement's cached plan DDL invalidated ("cached plan
//! must not change result type"), done only when the client can neither see nor be hurt by it.
//!
//! Retrying is safe when the failed batch started outside an explicit transaction (so the
//! server rolled back exactly that batch and nothing before it), the error is the first
//! answer of the batch (the client has seen nothing to be repeated), nothing after the batch's
//! Sync reached the server yet (order is kept), and the batch describes what it runs (the client
//! learns the new row shape from the fresh RowDescription instead of decoding new rows with the
//! old one). Otherwise the error reaches the client, as on a direct connection.

use bytes::BytesMut;

/// The SQLSTATE and message the server gives a statement whose result type DDL changed.
pub const PLAN_CHANGED_CODE: &str = "0A000";
pub const PLAN_CHANGED_MESSAGE: &str = "cached plan must not change result type";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// No batch recorded: waiting for one that starts at a boundary.
    #[default]
    Idle,
    /// Copying the batch's messages until its Sync.
    Recording,
    /// The batch is complete and sent; waiting for its first answer.
    Sent,
    /// The failure was hidden; the server's ReadyForQuery for it is still to come.
    Failed,
    /// That ReadyForQuery came (hidden too): the batch can go again.
    Due,
    /// The batch is being sent again; a second failure reaches the client.
    Retried,
    /// Not retryable until the next boundary.
    Off,
}

/// What a recorded batch needs to be sent again.
#[derive(Debug, Default)]
pub struct Replay {
    phase: Phase,
    described: bool,
    answered: bool,
    /// The recorded frames are being scanned again: they are not recorded a second time.
    rescanning: bool,
    buf: BytesMut,
}

impl Replay {
    /// Forgets any batch (a new checkout or a boundary); keeps the buffer's allocation.
    pub fn reset(&mut self) {
        self.phase = Phase::Idle;
        self.described = false;
        self.answered = false;
        self.buf.clear();
    }

    /// Sees one whole client frame before it is translated. `at_boundary` says whether the
    /// connection holds nothing of this client's (no transaction, batch or answer pending).
    pub fn on_client_frame(&mut self, tag: u8, frame: &[u8], at_boundary: bool) {
        if self.rescanning {
            return;
        }
        if at_boundary && !self.pending_retry() {
            self.reset();
        }
        match self.phase {
            Phase::Idle if tag == b'B' && at_boundary => {
                self.phase = Phase::Recording;
                self.buf.extend_from_slice(frame);
            }
            Phase::Recording => match tag {
                b'D' => {
                    self.described = true;
                    self.buf.extend_from_slice(frame);
                }
                b'B' | b'E' | b'H' => self.buf.extend_from_slice(frame),
                b'S' => {
                    self.buf.extend_from_slice(frame);
                    self.phase = Phase::Sent;
                }
                _ => self.off(),
            },
            // Anything sent behind the batch would run before its retry.
            Phase::Sent | Phase::Retried | Phase::Idle => self.off(),
            Phase::Failed | Phase::Due | Phase::Off => {}
        }
    }

    /// A client frame that arrives in pieces (streamed, never copied): not retryable.
    pub fn on_partial_frame(&mut self, at_boundary: bool) {
        if self.rescanning {
            return;
        }
        if at_boundary && !self.pending_retry() {
            self.reset();
        }
        self.off();
    }

    /// A hidden failure whose retry has not been sent yet: nothing may change that.
    fn pending_retry(&self) -> bool {
        matches!(self.phase, Phase::Failed | Phase::Due)
    }

    fn off(&mut self) {
        if !self.pending_retry() {
            self.phase = Phase::Off;
            self.buf.clear();
        }
    }

    /// The server answered something (other than an error) that reached the client.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Decides about an error from the server; true when it is hidden and the batch retried.
    pub fn on_error(&mut self, code: &str, message: &str) -> bool {
        let retry = self.phase == Phase::Sent
            && self.described
            && !self.answered
            && code == PLAN_CHANGED_CODE
            && message.contains(PLAN_CHANGED_MESSAGE);
        if retry {
            self.phase = Phase::Failed;
        }
        retry
    }

    /// A ReadyForQuery arrived; true when it closes the hidden failure (and is hidden too).
    /// Only then may the batch go again: the server ignores everything before it.
    pub fn on_ready(&mut self) -> bool {
        let ends_failure = self.phase == Phase::Failed;
        if ends_failure {
            self.phase = Phase::Due;
        }
        ends_failure
    }

    /// After the hidden failure's ReadyForQuery: the client frames to scan again.
    pub fn take_retry(&mut self) -> Option<BytesMut> {
        if self.phase != Phase::Due {
            return None;
        }
        self.phase = Phase::Retried;
        self.answered = false;
        self.rescanning = true;
        Some(std::mem::take(&mut self.buf))
    }

    /// Gives back the buffer after the retried frames were scanned, keeping its allocation.
    pub fn restore(&mut self, mut buf: BytesMut) {
        buf.clear();
        self.buf = buf;
        self.rescanning = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(tags: &[u8]) -> Replay {
        let mut r = Replay::default();
        for (i, &t) in tags.iter().enumerate() {
            r.on_client_frame(t, &[t, 0, 0, 0, 4], i == 0);
        }
        r
    }

    #[test]
    fn a_described_batch_failing_first_is_retried_once() {
        let mut r = recorded(b"BDES");
        assert!(r.on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
        assert!(
            r.take_retry().is_none(),
            "not before the failure's ReadyForQuery"
        );
        assert!(r.on_ready());
        assert!(!r.on_ready(), "only that one is hidden");
        let frames = r.take_retry().expect("retry");
        assert_eq!(&frames[..], b"B\0\0\0\x04D\0\0\0\x04E\0\0\0\x04S\0\0\0\x04");
        // Scanning the frames again records nothing.
        r.on_client_frame(b'B', b"B\0\0\0\x04", true);
        r.restore(frames);
        assert!(
            !r.on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE),
            "only once"
        );
        // The next batch at a boundary may be retried again.
        for &t in b"BDES" {
            r.on_client_frame(t, &[t, 0, 0, 0, 4], t == b'B');
        }
        assert!(r.on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
    }

    #[test]
    fn unsafe_batches_are_not_retried() {
        // No Describe: the client would decode new rows with the old shape.
        assert!(!recorded(b"BES").on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
        // Something already reached the client.
        let mut r = recorded(b"BDES");
        r.answered();
        assert!(!r.on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
        // A Parse or Query in the batch, or a message pipelined behind it.
        assert!(!recorded(b"BDPES").on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
        assert!(!recorded(b"BDESQ").on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
        // Another error.
        assert!(!recorded(b"BDES").on_error("42P01", "relation does not exist"));
    }

    #[test]
    fn batches_inside_a_transaction_are_not_recorded() {
        let mut r = Replay::default();
        for &t in b"BDES" {
            r.on_client_frame(t, &[t, 0, 0, 0, 4], false);
        }
        assert!(!r.on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
    }

    #[test]
    fn a_streamed_frame_stops_recording() {
        let mut r = recorded(b"BD");
        r.on_partial_frame(false);
        r.on_client_frame(b'S', b"S\0\0\0\x04", false);
        assert!(!r.on_error(PLAN_CHANGED_CODE, PLAN_CHANGED_MESSAGE));
    }
}
