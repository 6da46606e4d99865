//! The TCP options every connection gets: no Nagle delay, and keepalive and user timeout as
//! `TCPSettings` asks, so a peer that vanished without closing is noticed.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::TcpSettings;

/// What [`apply`] sets; built once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Idle time before the first probe, time between probes, probes before giving up.
    pub keepalive: Option<(Duration, Duration, u32)>,
    /// None leaves the system's retransmission limit.
    pub user_timeout: Option<Duration>,
}

impl From<&TcpSettings> for TcpOptions {
    fn from(s: &TcpSettings) -> Self {
        TcpOptions {
            keepalive: s.keepalive.then_some((
                s.keepalive_idle,
                s.keepalive_interval,
                s.keepalive_count,
            )),
            user_timeout: (!s.user_timeout.is_zero()).then_some(s.user_timeout),
        }
    }
}

/// Sets TCP_NODELAY and the options in `opts` on `sock`. On a listening socket, Linux
/// passes all of them on to every connection it accepts, which then needs no call of its own.
pub fn apply(sock: SockRef<'_>, opts: &TcpOptions) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    if let Some((idle, interval, count)) = opts.keepalive {
        let ka = TcpKeepalive::new().with_time(idle);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        let ka = ka.with_interval(interval).with_retries(count);
        #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
        let _ = (interval, count);
        sock.set_tcp_keepalive(&ka)?;
    }
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(opts.user_timeout)?;
    Ok(())
}

/// The same options for a tokio-postgres connection (the auth database's), which sets them
/// itself when it connects.
pub fn apply_to_pg(pg: &mut tokio_postgres::Config, opts: &TcpOptions) {
    pg.keepalives(opts.keepalive.is_some());
    if let Some((idle, interval, count)) = opts.keepalive {
        pg.keepalives_idle(idle)
            .keepalives_interval(interval)
            .keepalives_retries(count);
    }
    if let Some(t) = opts.user_timeout {
        pg.tcp_user_timeout(t);
    }
}

/// Test support shared with the listener's tests: one set of distinctive options, and the
/// check that a socket carries them.
#[cfg(test)]
pub(crate) mod probe {
    use super::*;

    /// Values no default has, so finding them proves they were set.
    pub fn distinctive() -> TcpOptions {
        TcpOptions {
            keepalive: Some((Duration::from_secs(61), Duration::from_secs(11), 7)),
            user_timeout: Some(Duration::from_secs(33)),
        }
    }

    /// Panics unless `sock` has TCP_NODELAY and exactly [`distinctive`]'s options.
    #[cfg(target_os = "linux")]
    pub fn assert_distinctive(sock: SockRef<'_>) {
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(61));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(11)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 7);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(33))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_turn_into_options() {
        let mut s = TcpSettings::default();
        let o = TcpOptions::from(&s);
        assert_eq!(
            o.keepalive,
            Some((Duration::from_secs(60), Duration::from_secs(10), 6))
        );
        assert_eq!(o.user_timeout, None);
        s.keepalive = false;
        s.user_timeout = Duration::from_secs(30);
        let o = TcpOptions::from(&s);
        assert_eq!(o.keepalive, None);
        assert_eq!(o.user_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_tokio_postgres_config_gets_the_options() {
        let mut pg = tokio_postgres::Config::new();
        apply_to_pg(&mut pg, &probe::distinctive());
        assert!(pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(61));
        assert_eq!(pg.get_keepalives_interval(), Some(Duration::from_secs(11)));
        assert_eq!(pg.get_keepalives_retries(), Some(7));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(33)));
        apply_to_pg(&mut pg, &TcpOptions::default());
        assert!(!pg.get_keepalives());
    }

    /// What the server side relies on: the options land on a connected socket.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_gets_the_options() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        apply(SockRef::from(&s), &probe::distinctive()).unwrap();
        probe::assert_distinctive(SockRef::from(&s));
    }
}
