//! Waiting on a running daemon's own signs of life (its log, its exit) with a deadline, so
//! the signal-handling tests (reload, shutdown) say what they wait for in one line.

use std::time::Duration;

use super::datapath::SETTLE;
use super::perseus::Perseus;
use super::poll_async;

/// True once `needle` appears in perseus's log, polled for up to [`SETTLE`].
pub async fn wait_log(perseus: &Perseus, needle: &str) -> bool {
    poll_async(SETTLE, Duration::from_millis(20), || async {
        perseus.log().contains(needle).then_some(())
    })
    .await
    .is_some()
}

/// How many lines of perseus's log contain `needle`.
pub fn log_lines_with(perseus: &Perseus, needle: &str) -> usize {
    perseus.log().lines().filter(|l| l.contains(needle)).count()
}

/// True once more than `before` lines of perseus's log contain `needle`, polled for up to
/// [`SETTLE`].
pub async fn wait_log_lines_above(perseus: &Perseus, needle: &str, before: usize) -> bool {
    poll_async(SETTLE, Duration::from_millis(20), || async {
        (log_lines_with(perseus, needle) > before).then_some(())
    })
    .await
    .is_some()
}

/// Panics with `why` when perseus has already exited.
pub fn assert_running(perseus: &mut Perseus, why: &str) {
    assert!(perseus.wait_exit(Duration::ZERO).is_none(), "{why}");
}
