//! Child-process plumbing for the fixtures: a watchdog that cleans up after the test
//! process however it ends, signals by pid, and bounded waits.
//!
//! Why a watchdog: fixtures kept in statics are never dropped, a panicking test may not
//! unwind through every owner, and nextest SIGKILLs a test that overruns. The watchdog
//! is a tiny `sh` that blocks reading a pipe whose only writer is the test process. When
//! the test process exits for any reason the kernel closes that pipe, `read` returns, and
//! the watchdog runs its clean-up command (stop a cluster, kill a pid) and removes the
//! fixture's directory. It lives in its own process group so the group-wide kill that
//! nextest sends on a timeout does not take it down before it has done its job, and its
//! stdio is not the test's, so nextest does not wait for it as a leaked child.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Blocks until its stdin closes, then runs "$@" and removes $WATCHDOG_REMOVE_DIR.
/// HUP/INT are ignored: the watchdog must outlive a closing terminal long enough to clean up.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT
read -r _ || :
"$@" >/dev/null 2>&1 </dev/null
if [ -n "${WATCHDOG_REMOVE_DIR:-}" ]; then rm -rf -- "$WATCHDOG_REMOVE_DIR"; fi
"#;

pub struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
    settled: bool,
}

impl Watchdog {
    /// Arms a watchdog that runs `on_exit` (program and arguments) and then removes
    /// `remove_dir`, once the test process is gone or [`Watchdog::fire`] is called.
    pub fn spawn(on_exit: &[OsString], remove_dir: Option<&Path>) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("perseus-test-watchdog")
            .args(on_exit)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0);
        match remove_dir {
            Some(dir) => cmd.env("WATCHDOG_REMOVE_DIR", dir),
            None => cmd.env_remove("WATCHDOG_REMOVE_DIR"),
        };
        let mut child = cmd.spawn().expect("spawn the watchdog shell (sh)");
        let pipe = child.stdin.take();
        Watchdog {
            child,
            pipe,
            settled: false,
        }
    }

    /// Runs the clean-up now and waits for it; false when it did not finish in time.
    pub fn fire(mut self, timeout: Duration) -> bool {
        self.settled = true;
        self.pipe = None;
        wait_timeout(&mut self.child, timeout).is_some()
    }

    /// Stands the watchdog down without running its clean-up: the owner has cleaned up
    /// itself. Must happen before the owner reaps a child whose pid the watchdog would
    /// kill, so the watchdog can never signal a recycled pid.
    pub fn disarm(mut self) {
        self.settled = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Neither fire nor disarm ran (a panic in the owner's set-up): let it clean up,
        // since the owner never became responsible for the fixture.
        self.pipe = None;
        let _ = wait_timeout(&mut self.child, Duration::from_secs(30));
    }
}

/// Waits for `child` at most `timeout`; None when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    super::poll(timeout, Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    })
}

/// Sends `signal` (e.g. `libc::SIGHUP`) to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when this process runs as root, so PostgreSQL must run as another user.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a local account, looked up with `id` (no libc passwd parsing).
pub fn account_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(user).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A command that runs `program` as `user` when we are root (via runuser), else as us.
pub fn command_as(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Argument vector equivalent of [`command_as`], for the watchdog's clean-up command.
pub fn argv_as(user: Option<&str>, program: &Path, args: &[&std::ffi::OsStr]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(user) = user {
        argv.extend(["runuser", "-u", user, "--"].map(OsString::from));
    }
    argv.push(program.into());
    argv.extend(args.iter().map(|a| a.to_os_string()));
    argv
}
