//! systemd readiness protocol (sd_notify): tells a `Type=notify` unit when the daemon is ready,
//! reloading or stopping, so `systemctl start/reload/stop` wait for the real state.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET`; a name starting with `@` is a Linux abstract socket. Without the variable
//! (not run by systemd) every call is a no-op.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// Name without the leading `@`.
    Abstract(Vec<u8>),
}

/// Where readiness notifications go; `None` inside means "not under systemd".
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` once, at start-up.
    pub fn from_env() -> Notifier {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) => Notifier::for_socket(&v),
            None => Notifier::default(),
        }
    }

    /// A notifier for an explicit socket name (`/path` or `@abstract`); empty means disabled.
    pub fn for_socket(name: &OsStr) -> Notifier {
        let bytes = name.as_bytes();
        let target = match bytes.first() {
            None => None,
            Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
            Some(_) => Some(Target::Path(PathBuf::from(name))),
        };
        Notifier { target }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let addr = match target {
            Target::Path(p) => SocketAddr::from_pathname(p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        let sock = UnixDatagram::unbound()?;
        let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "sd_notify datagram truncated ({sent} of {} bytes)",
                    state.len()
                ),
            ));
        }
        Ok(())
    }

    /// Sends and logs a failure instead of returning it: a missed notification must not
    /// stop the daemon, but the operator should learn why systemd is confused.
    fn send_logged(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }

    /// Listeners are open: `systemctl start` returns.
    pub fn ready(&self) {
        self.send_logged("READY=1\nSTATUS=serving");
    }

    /// A reload (SIGHUP) began; follow with [`Notifier::ready`] when it is done.
    pub fn reloading(&self) {
        // systemd wants the monotonic time with RELOADING=1 to match it with the reload request.
        let state = format!(
            "RELOADING=1\nSTATUS=reloading configuration\nMONOTONIC_USEC={}",
            monotonic_usec()
        );
        self.send_logged(&state);
    }

    /// Shutdown began.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=shutting down");
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which lives on our stack.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_each_state_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::for_socket(path.as_os_str());
        assert!(n.is_enabled());
        n.ready();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving");
        n.reloading();
        let got = recv(&sock);
        let mut lines = got.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec = got
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .expect("MONOTONIC_USEC line");
        assert!(usec.parse::<u64>().unwrap() > 0, "{got}");
        n.stopping();
        assert!(recv(&sock).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("perseus-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::for_socket(OsStr::new(&format!("@{name}")));
        n.send("READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let n = Notifier::for_socket(OsStr::new(""));
        assert!(!n.is_enabled());
        n.send("READY=1").unwrap();
        n.ready();
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::for_socket(dir.path().join("absent.sock").as_os_str());
        assert!(n.send("READY=1").is_err());
        // The logging variants swallow it.
        n.ready();
    }
}
