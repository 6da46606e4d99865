//! The `/health` document: version and build of the running daemon and whether the auth DB
//! answers, so a load balancer or an operator can tell a healthy instance at a glance.

use serde::Serialize;

/// What was built, as far as the build told us. The commit and compiler come from the
/// build environment (`PERSEUS_GIT_COMMIT`, `PERSEUS_RUSTC_VERSION`); a plain `cargo build`
/// without them reports "unknown".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub rustc: &'static str,
    pub profile: &'static str,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("PERSEUS_GIT_COMMIT").unwrap_or("unknown"),
            rustc: option_env!("PERSEUS_RUSTC_VERSION").unwrap_or("unknown"),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }

    /// The labels of `perseus_build_info`.
    pub fn labels(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("version", self.version),
            ("commit", self.commit),
            ("rustc", self.rustc),
            ("profile", self.profile),
        ]
    }
}

#[derive(Debug, Serialize)]
pub struct AuthDbHealth {
    pub reachable: bool,
}

#[derive(Debug, Serialize)]
pub struct Health {
    /// "ok", or "degraded" when the auth DB does not answer.
    pub status: &'static str,
    pub version: &'static str,
    pub build: BuildInfo,
    pub auth_db: AuthDbHealth,
}

impl Health {
    pub fn new(auth_db_reachable: bool) -> Health {
        let build = BuildInfo::current();
        Health {
            status: if auth_db_reachable { "ok" } else { "degraded" },
            version: build.version,
            build,
            auth_db: AuthDbHealth {
                reachable: auth_db_reachable,
            },
        }
    }

    /// 200 when everything answers, 503 otherwise, so a plain HTTP check can route on it.
    pub fn http_status(&self) -> u16 {
        if self.auth_db.reachable { 200 } else { 503 }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the health document always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachable_is_200_ok() {
        let h = Health::new(true);
        assert_eq!(h.http_status(), 200);
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["auth_db"]["reachable"], true);
        assert!(v["build"]["commit"].is_string());
    }

    #[test]
    fn unreachable_is_503_degraded() {
        let h = Health::new(false);
        assert_eq!(h.http_status(), 503);
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["auth_db"]["reachable"], false);
    }
}
