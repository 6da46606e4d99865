//! Listening sockets, set up the way a pooler wants them before tokio takes them over.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::tcp::TcpOptions;

/// How long the kernel may hold a connection that has sent nothing before handing it over
/// anyway, after which LoginTimeoutSecs applies as usual (PgBouncer holds 45 s too).
#[cfg(target_os = "linux")]
const DEFER_ACCEPT_SECS: libc::c_int = 45;

/// How a listening socket is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenOptions {
    /// The kernel hands a connection over only once the client's first bytes are in:
    /// PostgreSQL clients speak first, so the accept and the startup packet take one wake-up
    /// instead of two, and a TCP probe that sends nothing never reaches us.
    pub defer_first_bytes: bool,
    /// SO_REUSEPORT: other sockets with it set may listen on the same address, and the kernel
    /// spreads new connections between them (`ListenReusePort`).
    pub reuse_port: bool,
    /// TCP_NODELAY, keepalive and user timeout for the connections accepted: set once on the
    /// listening socket, which Linux copies them from, instead of per connection.
    pub tcp: Option<TcpOptions>,
}

/// Binds one address; IPv6 sockets are v6-only so `:port` can bind both families side by
/// side.
pub fn bind(addr: SocketAddr, opts: ListenOptions) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    if opts.reuse_port {
        set_reuse_port(&sock)?;
    }
    if let Some(tcp) = &opts.tcp {
        super::tcp::apply(socket2::SockRef::from(&sock), tcp)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    if opts.defer_first_bytes
        && let Err(e) = defer_accept(&sock)
    {
        // Only a saved wake-up is lost: connections are accepted as they come.
        tracing::warn!(%addr, error = %e, "cannot set TCP_DEFER_ACCEPT");
    }
    TcpListener::from_std(sock.into())
}

#[cfg(unix)]
fn set_reuse_port(sock: &socket2::Socket) -> std::io::Result<()> {
    sock.set_reuse_port(true)
}

#[cfg(not(unix))]
fn set_reuse_port(_sock: &socket2::Socket) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "ListenReusePort needs SO_REUSEPORT, which this platform lacks",
    ))
}

#[cfg(target_os = "linux")]
fn defer_accept(sock: &socket2::Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: the descriptor is a live socket owned by `sock`, and the option value is a
    // c_int whose address and size are passed together.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_sock: &socket2::Socket) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A connection that has sent nothing is not handed over; one that has is, with its
    /// bytes already readable.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn silent_connections_wait_in_the_kernel() {
        let deferring = ListenOptions {
            defer_first_bytes: true,
            ..Default::default()
        };
        let l = bind("127.0.0.1:0".parse().unwrap(), deferring).unwrap();
        let addr = l.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), l.accept()).await;
        assert!(
            early.is_err(),
            "a connection that sent nothing was accepted"
        );

        let mut talker = tokio::net::TcpStream::connect(addr).await.unwrap();
        talker
            .write_all(b"\0\0\0\x08\x04\xd2\x16\x2f")
            .await
            .unwrap();
        let (s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("a connection with data is accepted")
            .unwrap();
        // A plain non-blocking read, before any readiness event: the bytes are already there.
        let mut s = s.into_std().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(std::io::Read::read(&mut s, &mut buf).unwrap(), 8);
    }

    #[tokio::test]
    async fn without_deferral_a_silent_connection_is_accepted() {
        let l = bind("127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
        let addr = l.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("accepted at once")
            .unwrap();
    }

    /// A connection accepted from a listener with TCP options has them without a call of its
    /// own: the accept loop relies on this to spend no syscall per connection on them.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_inherit_the_listeners_tcp_options() {
        use crate::net::tcp::probe;
        let opts = ListenOptions {
            tcp: Some(probe::distinctive()),
            ..Default::default()
        };
        let l = bind("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        probe::assert_distinctive(socket2::SockRef::from(&s));
    }

    /// Two sockets that both ask for SO_REUSEPORT share a port and both get connections once
    /// one closes; without it the second bind fails.
    #[cfg(unix)]
    #[tokio::test]
    async fn reuse_port_lets_a_second_listener_share_the_port() {
        let sharing = ListenOptions {
            reuse_port: true,
            ..Default::default()
        };
        let first = bind("127.0.0.1:0".parse().unwrap(), sharing).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, ListenOptions::default()).expect_err("a plain bind on a taken port");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let second = bind(addr, sharing).expect("a second SO_REUSEPORT listener");
        // Once the first goes, its port is the second's alone: every new connection lands there.
        drop(first);
        for _ in 0..5 {
            let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), second.accept())
                .await
                .expect("the remaining listener accepts")
                .unwrap();
        }
    }
}
