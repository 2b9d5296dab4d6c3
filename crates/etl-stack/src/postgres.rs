//! A private Postgres cluster from Debian's `postgresql-15` binaries.
//!
//! A cluster lives in one directory:
//! ```text
//! <dir>/            0755, so the postgres user can reach data/
//!   data/           PGDATA, owned by postgres, 0700; also holds the Unix socket (-k)
//!   postgres.log    server output (persistent clusters; temp ones log under target/)
//! ```
//! Starting on a directory whose `data/PG_VERSION` exists reuses the cluster; otherwise
//! it is created with `initdb --auth=trust -U postgres`, so every local and 127.0.0.1
//! connection is trusted and no password exists anywhere.
//!
//! `initdb` and `postgres` refuse to run as root. When we are root they run as the
//! `postgres` system user through [`CommandExt::uid`]/[`CommandExt::gid`] — what
//! `runuser -u postgres --` does, minus the extra process and PAM session — so the
//! postmaster is our direct child and our stop signal reaches it unforwarded.

use std::fs::Permissions;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::logs;
use crate::names::unique_name;
use crate::net::{free_port, port_in_use};
use crate::process::{STOP_GRACE, ServerProcess, ServerSpec, log_tail, run_logged};

/// Environment variable naming the directory with `initdb`, `postgres` and `pg_isready`.
pub const PG_BIN_ENV: &str = "PG_BIN";
/// Where Debian's `postgresql-15` package puts them.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How many fresh ports a temp cluster tries when it loses a port race.
const PORT_ATTEMPTS: usize = 3;

/// How to start a [`PgCluster`]; see [`PgCluster::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PgBuilder {
    dir: Option<PathBuf>,
    port: Option<u16>,
    fsync: Option<bool>,
    max_connections: u32,
    log_dir: Option<PathBuf>,
    startup_timeout: Duration,
}

impl Default for PgBuilder {
    fn default() -> Self {
        PgBuilder {
            dir: None,
            port: None,
            fsync: None,
            max_connections: 200,
            log_dir: None,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl PgBuilder {
    /// Keep the cluster in `dir` (created if missing, reused if it holds one) instead of
    /// a temporary directory removed on drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Listen on `port` instead of a free one. Starting fails if the port is taken.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `fsync` on or off. Default: off for temp clusters (tests), on for a cluster in a
    /// given directory (its data is meant to survive).
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = Some(fsync);
        self
    }

    /// `max_connections`; default 200 (every test of a binary shares one cluster, and
    /// each service under test holds a pool).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Write the server log to `<log_dir>/postgres-<port>.log`. Default: the running
    /// test's log directory for temp clusters, `<dir>/postgres.log` otherwise.
    pub fn log_dir(mut self, log_dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(log_dir.into());
        self
    }

    /// How long to wait for the server to accept connections; default 60 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Creates (or reuses) the cluster, starts it and waits until it accepts
    /// connections. Blocking: from async code that must not stall, wrap it in
    /// `tokio::task::spawn_blocking`.
    pub fn start(self) -> Result<PgCluster> {
        let bin = pg_bin()?;
        let user = PgUser::current()?;
        let (dir, temp) = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("cannot create cluster directory", dir, e))?;
                let dir = dir
                    .canonicalize()
                    .map_err(|e| Error::io("cannot resolve cluster directory", dir, e))?;
                (dir, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("etl-stack-pg-")
                    .tempdir()
                    .map_err(|e| Error::io("cannot create temp dir in", std::env::temp_dir(), e))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let data_dir = dir.join("data");
        if let Some(user) = &user {
            make_reachable(&dir)?;
            user.check_can_reach(&dir)?;
            if !data_dir.exists() {
                std::fs::create_dir(&data_dir)
                    .map_err(|e| Error::io("cannot create data directory", &data_dir, e))?;
            }
            user.own(&data_dir)?;
        }

        let log_for = |port: u16| -> Result<PathBuf> {
            Ok(match (&self.log_dir, &temp) {
                (Some(log_dir), _) => log_dir.join(format!("postgres-{port}.log")),
                (None, Some(_)) => logs::test_log_dir()?.join(format!("postgres-{port}.log")),
                (None, None) => dir.join("postgres.log"),
            })
        };

        let first_port = match self.port {
            Some(port) if port_in_use(port) => {
                return Err(Error::PortInUse {
                    server: "postgres",
                    port,
                });
            }
            Some(port) => port,
            None => free_port(),
        };

        if !data_dir.join("PG_VERSION").is_file() {
            let mut initdb = pg_command(&bin, "initdb", &user, &dir);
            initdb
                .arg("-D")
                .arg(&data_dir)
                .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync");
            run_logged(initdb, &log_for(first_port)?)?;
        }

        let fsync = self.fsync.unwrap_or(temp.is_none());
        let mut port = first_port;
        let mut attempt = 1;
        let process = loop {
            let log = log_for(port)?;
            match self.start_server(
                &bin,
                &user,
                &dir,
                &data_dir,
                port,
                fsync,
                &log,
                temp.is_some(),
            ) {
                Ok(process) => break process,
                // Another process took our free port between free_port() and bind().
                Err(Error::Exited { tail, .. })
                    if self.port.is_none()
                        && attempt < PORT_ATTEMPTS
                        && tail.contains("already in use") =>
                {
                    tracing::debug!(port, "postgres lost a port race; retrying");
                    attempt += 1;
                    port = free_port();
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(port, dir = %dir.display(), log = %process.log().display(), "postgres started");
        Ok(PgCluster {
            process: Some(process),
            port,
            dir,
            data_dir,
            _temp: temp,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn start_server(
        &self,
        bin: &Path,
        user: &Option<PgUser>,
        dir: &Path,
        data_dir: &Path,
        port: u16,
        fsync: bool,
        log: &Path,
        temp: bool,
    ) -> Result<ServerProcess> {
        let mut postgres = pg_command(bin, "postgres", user, dir);
        postgres
            .arg("-D")
            .arg(data_dir)
            .arg("-k")
            .arg(data_dir)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // The verifier's latency ends at the rows' commit: Postgres records it.
            .args(["-c", "track_commit_timestamp=on"])
            .arg("-c")
            .arg(format!("max_connections={}", self.max_connections));
        if !fsync {
            // Durability traded for speed: only for clusters nobody keeps.
            postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        let mut process = ServerProcess::spawn(ServerSpec {
            name: format!("postgres on 127.0.0.1:{port}"),
            command: postgres,
            log,
            // SIGINT is postgres' "fast" shutdown: what `pg_ctl stop -m fast` sends.
            stop_signal: Signal::INT,
            cleanup_dir: temp.then_some(dir),
        })?;
        let pg_isready = bin.join("pg_isready");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        process.wait_ready(addr, self.startup_timeout, || {
            Command::new(&pg_isready)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ])
                .arg("-p")
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })?;
        Ok(process)
    }
}

/// A running Postgres cluster listening on 127.0.0.1 with trust authentication for the
/// `postgres` superuser. Dropping it stops the server (fast shutdown) and, for a temp
/// cluster, removes its directory.
#[derive(Debug)]
pub struct PgCluster {
    // Field order is drop order: the server stops before its temp dir is removed.
    process: Option<ServerProcess>,
    port: u16,
    dir: PathBuf,
    data_dir: PathBuf,
    _temp: Option<TempDir>,
}

impl PgCluster {
    /// Options for a cluster; `builder().start()` is [`PgCluster::start_temp`].
    pub fn builder() -> PgBuilder {
        PgBuilder::default()
    }

    /// A throwaway cluster in a temp dir on a free port, `fsync=off`, logging to the
    /// running test's log directory.
    pub fn start_temp() -> Result<PgCluster> {
        PgCluster::builder().start()
    }

    /// A cluster kept in `dir` on `port`: initialised on first use, reused afterwards.
    pub fn start_in(dir: impl Into<PathBuf>, port: u16) -> Result<PgCluster> {
        PgCluster::builder().dir(dir).port(port).start()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The cluster directory (parent of `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PGDATA, which is also the Unix socket directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the server process is still alive (false once it exited, for example
    /// after a kill -9, or once stopped). A supervisor polls this to restart it.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.check_running().is_ok())
    }

    /// The postmaster's process id, for fault tests (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// The server's log file (None once stopped).
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(ServerProcess::log)
    }

    /// A connection to `db`; its connection task runs on the caller's tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let url = self.url(db);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|source| self.pg_error(&url, source))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// Creates database `name` and returns its URL. Fails if it exists.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map_err(|source| self.pg_error(&self.url("postgres"), source))?;
        Ok(self.url(name))
    }

    /// Creates database `name` unless it exists (for persistent clusters that are
    /// started again), and returns its URL.
    pub async fn ensure_database(&self, name: &str) -> Result<String> {
        match self.create_database(name).await {
            Err(Error::Postgres { source, .. })
                if source.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) =>
            {
                Ok(self.url(name))
            }
            other => other,
        }
    }

    /// Creates a database named [`unique_name`]`(prefix)` and returns its URL; each test
    /// takes its own so tests never share state.
    pub async fn create_unique_database(&self, prefix: &str) -> Result<String> {
        self.create_database(&unique_name(prefix)).await
    }

    /// Stops the server with a fast shutdown (SIGINT to the postmaster, as
    /// `pg_ctl stop -m fast` does) and waits for it. The directory stays until drop.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(STOP_GRACE)?;
        }
        Ok(())
    }

    fn pg_error(&self, url: &str, source: tokio_postgres::Error) -> Error {
        if let Some(log) = self.log_path() {
            tracing::debug!(log = %log.display(), "postgres error; server log tail:\n{}", log_tail(log));
        }
        Error::Postgres {
            url: url.to_owned(),
            source,
        }
    }
}

/// `"name"` with inner quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn pg_bin() -> Result<PathBuf> {
    let bin = std::env::var_os(PG_BIN_ENV)
        .filter(|b| !b.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from);
    if bin.join("postgres").is_file() && bin.join("initdb").is_file() {
        Ok(bin)
    } else {
        Err(Error::BinaryNotFound {
            what: "postgres/initdb",
            tried: format!("{}/{{postgres,initdb}}", bin.display()),
            hint: "install them with `apt-get install postgresql-15`, or set PG_BIN to the \
                   directory holding initdb, postgres and pg_isready",
        })
    }
}

/// A command for one of the Postgres binaries, as the postgres user when we are root.
fn pg_command(bin: &Path, program: &str, user: &Option<PgUser>, dir: &Path) -> Command {
    let mut command = Command::new(bin.join(program));
    // A cwd the postgres user can enter (ours may be /root).
    command.current_dir(dir);
    // Flags say everything; a stray PGDATA/PGPORT in the environment must not.
    for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
        command.env_remove(var);
    }
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

/// The `postgres` system user, which we run the server as when we are root.
#[derive(Debug, Clone, Copy)]
struct PgUser {
    uid: u32,
    gid: u32,
}

impl PgUser {
    /// `Some` when running as root (postgres refuses root), `None` otherwise.
    fn current() -> Result<Option<PgUser>> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let output = Command::new("getent")
            .args(["passwd", "postgres"])
            .stderr(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: "getent passwd postgres".to_owned(),
                source,
            })?;
        let line = String::from_utf8_lossy(&output.stdout);
        let mut fields = line.trim().split(':').skip(2);
        match (fields.next(), fields.next()) {
            (Some(uid), Some(gid)) if output.status.success() => match (uid.parse(), gid.parse()) {
                (Ok(uid), Ok(gid)) => Ok(Some(PgUser { uid, gid })),
                _ => Err(Error::NoPostgresUser),
            },
            _ => Err(Error::NoPostgresUser),
        }
    }

    fn own(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| Error::io("cannot chown to postgres", path, e))?;
        std::fs::set_permissions(path, Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot chmod 0700", path, e))
    }

    /// Every ancestor of `dir` must be searchable by others (postgres owns none of them).
    fn check_can_reach(&self, dir: &Path) -> Result<()> {
        for ancestor in dir.ancestors() {
            let meta =
                std::fs::metadata(ancestor).map_err(|e| Error::io("cannot stat", ancestor, e))?;
            let mode = meta.mode();
            let searchable = mode & 0o001 != 0
                || (meta.uid() == self.uid && mode & 0o100 != 0)
                || (meta.gid() == self.gid && mode & 0o010 != 0);
            if !searchable {
                return Err(Error::NotTraversable {
                    path: ancestor.to_path_buf(),
                    mode: mode & 0o7777,
                });
            }
        }
        Ok(())
    }
}

/// The cluster directory itself is ours; open it to others so postgres reaches `data/`
/// (temp dirs are created 0700).
fn make_reachable(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("cannot stat", dir, e))?;
    if meta.mode() & 0o001 == 0 {
        let mode = (meta.mode() & 0o7777) | 0o755;
        std::fs::set_permissions(dir, Permissions::from_mode(mode))
            .map_err(|e| Error::io("cannot chmod o+rx", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reachability check needs no privileges: a uid other than the directory's
    /// owner stands in for the `postgres` user, so this runs as root and as anyone else
    /// (`testkit`'s integration tests start the real server as root).
    #[test]
    fn a_private_directory_is_unreachable_for_another_user() {
        let base = tempfile::tempdir().expect("tempdir");
        let private = base.path().join("private");
        std::fs::create_dir(&private).expect("mkdir");
        std::fs::set_permissions(&private, Permissions::from_mode(0o700)).expect("chmod");
        let owner = std::fs::metadata(&private).expect("stat");
        let other = PgUser {
            uid: owner.uid().wrapping_add(1),
            gid: owner.gid().wrapping_add(1),
        };
        match other.check_can_reach(&private) {
            Err(Error::NotTraversable { path, mode }) => {
                assert_eq!(path, private);
                assert_eq!(mode, 0o700);
            }
            other => panic!("expected NotTraversable, got {other:?}"),
        }
        let owner = PgUser {
            uid: owner.uid(),
            gid: owner.gid(),
        };
        // The owner may walk its own 0700 directory; the temp dir above it is ours too.
        assert!(owner.check_can_reach(&private).is_ok());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
