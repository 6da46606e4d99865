//! Where clusters come from: the server binaries, a directory every cluster can live in,
//! and the `initdb` template that each new cluster copies (initdb costs most of a second,
//! a copy a tenth of that).

use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::pg::{CLEARTEXT_GROUP, MD5_GROUP, SUPERUSER, SUPERUSER_PASSWORD};
use super::proc::{Watchdog, account_ids, command_as, is_root};

pub const INSTALL_HINT: &str =
    "run scripts/test.sh (it installs PostgreSQL 15) or `apt-get install postgresql-15`";

/// Settings for a disposable server: no fsync (the data must survive a server crash, as in
/// outage tests, but not a machine crash), small memory so several clusters fit side by side.
const SERVER_CONF: &str = "
# perseus test harness
listen_addresses = '127.0.0.1'
fsync = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
log_line_prefix = '%m [%p] %u@%d '
";

/// Sockets trust local users (the harness itself); TCP demands a password: SCRAM unless
/// the role is a member of the md5 or cleartext group (see `PgCluster::create_role_with`).
fn pg_hba() -> String {
    format!(
        "local all all trust
host all +{MD5_GROUP} 127.0.0.1/32 md5
host all +{CLEARTEXT_GROUP} 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"
    )
}

/// The server binaries: `pg_config --bindir`, else Debian's PostgreSQL 15 location.
pub fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    let candidates = from_pg_config
        .into_iter()
        .chain([PathBuf::from("/usr/lib/postgresql/15/bin")]);
    for dir in candidates {
        if dir.join("initdb").is_file()
            && dir.join("pg_ctl").is_file()
            && dir.join("psql").is_file()
        {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl, psql) not found via `pg_config --bindir` or in /usr/lib/postgresql/15/bin: {INSTALL_HINT}"
    );
}

/// Per-user directory under /tmp for clusters. Every parent of a cluster must be
/// traversable by the server account, which rules out 0700 temp dirs and root's TMPDIR.
pub fn base_dir() -> PathBuf {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let root = if is_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let base = root.join(format!("perseus-test-{uid}"));
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", base.display()));
    base
}

/// A fresh directory under `base` owned by the server account.
pub fn make_dir(base: &Path, prefix: &str, run_as: Option<&str>) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap_or_else(|e| panic!("create a directory in {}: {e}", base.display()))
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    if let Some(user) = run_as {
        let (uid, gid) = account_ids(user).expect("server account exists");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", dir.display()));
    }
    dir
}

/// Returns the template data directory for this PostgreSQL version and harness
/// configuration, running initdb when there is none yet. Concurrent test processes may
/// both build one; the atomic rename lets exactly one win and the other discards its own.
pub fn ensure_template(bindir: &Path, base: &Path, run_as: Option<&str>) -> PathBuf {
    let version = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        version,
        SERVER_CONF,
        pg_hba(),
        SUPERUSER,
        SUPERUSER_PASSWORD,
    )
        .hash(&mut hasher);
    let template = base.join(format!("template-{:016x}", hasher.finish()));
    if template.join("PG_VERSION").is_file() {
        return template;
    }

    let work = make_dir(base, "initdb-", run_as);
    // Removes the work directory even if initdb is interrupted with the test process.
    let cleanup = Watchdog::spawn(&["true".into()], Some(&work));
    let pwfile = work.join("pwfile");
    std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write the password file");
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644))
        .expect("chmod pwfile");
    let data = work.join("data");
    run_ok(
        command_as(run_as, &bindir.join("initdb"))
            .current_dir(&work)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args([
                "--no-sync",
                "--no-instructions",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null()),
        "initdb",
    );
    // Appending keeps the files' owner and mode, which the server checks.
    append(&data.join("postgresql.conf"), SERVER_CONF);
    std::fs::write(data.join("pg_hba.conf"), pg_hba()).expect("write pg_hba.conf");
    // Losing the race (template already there) is fine: the winner's copy is identical.
    let _ = std::fs::rename(&data, &template);
    cleanup.fire(Duration::from_secs(60));
    assert!(
        template.join("PG_VERSION").is_file(),
        "template cluster missing at {} after initdb",
        template.display()
    );
    template
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
