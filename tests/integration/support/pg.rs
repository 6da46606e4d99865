//! Throwaway PostgreSQL clusters on free loopback ports, run as the `postgres` user when
//! the tests run as root (PostgreSQL refuses to run as root).
//!
//! Each starts from a copy of an `initdb` template (see `pg_template.rs`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::pg_template::{INSTALL_HINT, base_dir, bindir, ensure_template, make_dir, run_ok};
use super::proc::{Watchdog, account_ids, argv_as, command_as, is_root};
use super::{free_port, log_tail, quote_ident, quote_literal};

pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "perseus-test-superuser";
/// The account the server runs as when the tests run as root.
const SERVER_ACCOUNT: &str = "postgres";
/// Members of these roles authenticate over TCP with md5 / cleartext instead of SCRAM.
pub const MD5_GROUP: &str = "perseus_md5_users";
pub const CLEARTEXT_GROUP: &str = "perseus_password_users";

/// How a role's password is stored and checked by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerAuth {
    Scram,
    Md5,
    Cleartext,
}

pub struct PgCluster {
    bindir: PathBuf,
    /// Holds `data/`, `server.log` and the unix socket.
    dir: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    watchdog: Option<Watchdog>,
}

impl PgCluster {
    /// Starts a new cluster; panics with the server log when it cannot.
    pub fn start() -> PgCluster {
        let bindir = bindir();
        let run_as = is_root().then_some(SERVER_ACCOUNT);
        if let Some(user) = run_as {
            assert!(
                account_ids(user).is_some(),
                "running as root needs the `{user}` account to run PostgreSQL: {INSTALL_HINT}"
            );
        }
        let base = base_dir();
        let template = ensure_template(&bindir, &base, run_as);

        let dir = make_dir(&base, "pg-", run_as);
        let data = dir.join("data");
        let stop_args: [&OsStr; 8] = [
            "-D".as_ref(),
            data.as_os_str(),
            "stop".as_ref(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            "30".as_ref(),
        ];
        let watchdog = Watchdog::spawn(
            &argv_as(run_as, &bindir.join("pg_ctl"), &stop_args),
            Some(&dir),
        );
        let mut cluster = PgCluster {
            bindir,
            dir,
            port: 0,
            run_as,
            watchdog: Some(watchdog),
        };
        run_ok(
            Command::new("cp").arg("-a").arg(&template).arg(&data),
            "copy the template cluster",
        );

        // The free port may be taken by someone else before the server binds it.
        const ATTEMPTS: usize = 8;
        for attempt in 1..=ATTEMPTS {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return cluster,
                Err(log) if attempt < ATTEMPTS && port_was_taken(&log) => continue,
                Err(log) => panic!("PostgreSQL did not start on port {}:\n{log}", cluster.port),
            }
        }
        unreachable!("the loop returns or panics on its last attempt")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as `dest_host` in perseus_auth wants it.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Superuser URL for the `postgres` database.
    pub fn dsn(&self) -> String {
        self.dsn_for("postgres")
    }

    /// Superuser URL for `db`.
    pub fn dsn_for(&self, db: &str) -> String {
        self.dsn_as(SUPERUSER, SUPERUSER_PASSWORD, db)
    }

    /// URL for `user`/`password` on `db`, percent-encoded where needed.
    pub fn dsn_as(&self, user: &str, password: &str, db: &str) -> String {
        let mut url = url::Url::parse(&format!("postgres://127.0.0.1:{}", self.port))
            .expect("a loopback URL parses");
        url.set_username(user).expect("URL takes a user name");
        url.set_password(Some(password))
            .expect("URL takes a password");
        url.set_path(db);
        url.to_string()
    }

    /// A superuser connection to `db` over TCP (SCRAM). Needs a tokio runtime.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        self.connect_as(db, SUPERUSER, SUPERUSER_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("connect to {db} on port {} as {SUPERUSER}: {e}", self.port))
    }

    /// A connection as `user` over TCP; errors are returned so tests can assert on them.
    pub async fn connect_as(
        &self,
        db: &str,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// psql against `db` as the superuser over TCP, ready for more arguments.
    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join("psql"));
        for var in [
            "PGOPTIONS",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGSSLMODE",
            "PGPASSFILE",
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs psql against `db` with `args`; the caller checks the output.
    pub fn psql(&self, db: &str, args: &[&str]) -> Output {
        self.psql_cmd(db).args(args).output().expect("run psql")
    }

    /// Runs `sql` in `db` and returns psql's unaligned, tuples-only output; panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, &["-At", "-c", sql]);
        assert!(
            out.status.success(),
            "psql -c {sql:?} on {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("psql prints UTF-8")
            .trim_end()
            .to_string()
    }

    pub fn create_database(&self, name: &str) {
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    pub fn create_database_owned_by(&self, name: &str, owner: &str) {
        self.sql(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(name),
                quote_ident(owner)
            ),
        );
    }

    /// A login role whose password the server checks with SCRAM-SHA-256.
    pub fn create_role(&self, name: &str, password: &str) {
        self.create_role_with(name, password, ServerAuth::Scram);
    }

    /// A login role checked with md5 (stored as an md5 hash) or with a cleartext password
    /// exchange, via membership in a group that pg_hba.conf routes to that method.
    pub fn create_role_with(&self, name: &str, password: &str, auth: ServerAuth) {
        let (encryption, group) = match auth {
            ServerAuth::Scram => ("scram-sha-256", None),
            ServerAuth::Md5 => ("md5", Some(MD5_GROUP)),
            ServerAuth::Cleartext => ("scram-sha-256", Some(CLEARTEXT_GROUP)),
        };
        let mut sql = format!(
            "SET password_encryption = '{encryption}'; CREATE ROLE {} LOGIN PASSWORD {};",
            quote_ident(name),
            quote_literal(password)
        );
        if let Some(group) = group {
            // Parallel tests may race to create the group: either error means it exists.
            sql.push_str(&format!(
                "DO $$ BEGIN CREATE ROLE {group} NOLOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
                 GRANT {group} TO {};",
                quote_ident(name)
            ));
        }
        self.sql("postgres", &sql);
    }

    /// Stops the server abruptly (immediate mode), as an outage would.
    pub fn stop(&self) {
        run_ok(
            self.pg_ctl().arg("-D").arg(self.data()).args([
                "stop",
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
            ]),
            "pg_ctl stop",
        );
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port.
    pub fn restart(&self) {
        if let Err(log) = self.pg_ctl_start() {
            panic!("PostgreSQL did not restart on port {}:\n{log}", self.port);
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = command_as(self.run_as, &self.bindir.join("pg_ctl"));
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    /// Starts the postmaster and waits until it accepts connections. On failure returns
    /// what the server logged during this attempt.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log_before = self.log().len();
        // The socket lives in the cluster directory, so clusters never share one.
        let options = format!("-p {} -k {}", self.port, self.dir.display());
        let out = self
            .pg_ctl()
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl");
        if out.status.success() {
            return Ok(());
        }
        let log = self.log();
        Err(format!(
            "pg_ctl: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log.get(log_before..).unwrap_or(&log)
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL log (port {}), last lines ---\n{}",
                self.port,
                log_tail(&self.log_path(), 40)
            );
        }
        // The watchdog's clean-up is exactly ours: stop immediately, remove the directory.
        let done = self
            .watchdog
            .take()
            .is_some_and(|w| w.fire(Duration::from_secs(60)));
        if !done {
            let _ = self
                .pg_ctl()
                .arg("-D")
                .arg(self.data())
                .args(["stop", "-m", "immediate", "-w"])
                .output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn port_was_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}
