//! Where a pool connects: the destination key every tenant routed there shares.

use std::fmt;

/// Host, port, database and user of a pool; the password is held here once decrypted.
#[derive(Clone)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub user: String,
    pub password: String,
}

/// Identity of a physical pool: one per (host, port, db, user).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dest_host {0:?}: expected host or host:port")]
pub struct BadDestHost(pub String);

impl DestKey {
    /// Builds the key from a `perseus_auth` row; `dest_host` is `host` or `host:port` (IPv6 in brackets).
    pub fn from_row(dest_host: &str, dest_db: &str, dest_user: &str) -> Result<Self, BadDestHost> {
        let bad = || BadDestHost(dest_host.to_owned());
        let (host, port) = if let Some(rest) = dest_host.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
            match tail.strip_prefix(':') {
                Some(p) => (h, p.parse().map_err(|_| bad())?),
                None if tail.is_empty() => (h, 5432),
                None => return Err(bad()),
            }
        } else {
            match dest_host.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p.parse().map_err(|_| bad())?),
                Some(_) => (dest_host, 5432),
                None => (dest_host, 5432),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(DestKey {
            host: host.to_owned(),
            port,
            db: dest_db.to_owned(),
            user: dest_user.to_owned(),
        })
    }

    /// The `dest_host/dest_db` name used by OverrideSettings and metrics labels.
    pub fn dest_host_label(&self) -> String {
        if self.port == 5432 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/{}", self.user, self.dest_host_label(), self.db)
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        let k = DestKey::from_row("db.example.com", "d", "u").unwrap();
        assert_eq!((k.host.as_str(), k.port), ("db.example.com", 5432));
        let k = DestKey::from_row("127.0.0.1:6000", "d", "u").unwrap();
        assert_eq!((k.host.as_str(), k.port), ("127.0.0.1", 6000));
        let k = DestKey::from_row("[::1]:6000", "d", "u").unwrap();
        assert_eq!((k.host.as_str(), k.port), ("::1", 6000));
        assert!(DestKey::from_row("h:notaport", "d", "u").is_err());
        assert!(DestKey::from_row("", "d", "u").is_err());
    }
}
