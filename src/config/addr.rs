//! Listen addresses with Go's `net.Listen` meaning: `:5433` is every interface, IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Resolves a Go-style `host:port` into the socket addresses to bind.
///
/// An empty host yields `0.0.0.0:port` and `[::]:port`; bind the IPv6 one with `IPV6_V6ONLY`
/// set so the two do not collide, and treat the IPv6 one as optional on hosts without IPv6.
/// A host name is resolved (this may block on DNS) and every distinct address is returned.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(addr)?;
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host `{host}`: {e}"))?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in resolved {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(format!("host `{host}` resolves to no address"));
    }
    Ok(out)
}

/// Splits like Go's `net.SplitHostPort` and parses the port as a number.
fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let hint = "use `:5433` for every interface, `host:5433`, or `[::1]:5433`";
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{addr}` has `[` without `]`; {hint}"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("`{addr}` lacks a port after `]`; {hint}"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "`{host}` in `{addr}` is not an IPv6 address; {hint}"
            ));
        }
        (host, port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("`{addr}` lacks a port; {hint}"))?;
        if host.contains(':') {
            return Err(format!(
                "`{addr}` has too many colons; write IPv6 hosts in brackets; {hint}"
            ));
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port `{port}` in `{addr}` is not a number from 0 to 65535"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn empty_host_means_both_families() {
        let got: Vec<String> = resolve(":5433")
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["0.0.0.0:5433", "[::]:5433"]);
    }

    #[test]
    fn literals_and_names() {
        assert_eq!(
            resolve("127.0.0.1:1").unwrap()[0].to_string(),
            "127.0.0.1:1"
        );
        assert_eq!(resolve("[::1]:5433").unwrap()[0].to_string(), "[::1]:5433");
        let local = resolve("localhost:7000").unwrap();
        assert!(
            !local.is_empty()
                && local
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 7000)
        );
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(resolve("5433").unwrap_err().contains("lacks a port"));
        assert!(resolve("::1:5433").unwrap_err().contains("too many colons"));
        assert!(resolve("[::1]").unwrap_err().contains("lacks a port"));
        assert!(
            resolve("[nope]:1")
                .unwrap_err()
                .contains("not an IPv6 address")
        );
        assert!(resolve(":70000").unwrap_err().contains("0 to 65535"));
        assert!(resolve(":pg").unwrap_err().contains("not a number"));
        assert!(
            resolve("no-such-host.invalid:1")
                .unwrap_err()
                .contains("cannot resolve")
        );
    }
}
