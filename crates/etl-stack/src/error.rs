//! The one error type of the crate. Every variant names the binary, the port or the log
//! file involved, so a failed test says what to install, what to free or where to look.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, using or stopping a server.
///
/// `Debug` prints the message (and its causes), not the fields: tests that return
/// `Result` and `.expect()` calls print `Debug`, and a server log tail is only readable
/// with its line breaks intact.
#[derive(thiserror::Error)]
pub enum Error {
    /// A server binary is missing; `hint` says how to install it.
    #[error("{what} not found ({tried}); {hint}")]
    BinaryNotFound {
        what: &'static str,
        tried: String,
        hint: &'static str,
    },

    /// The OS refused to start a process.
    #[error("failed to run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A one-shot command (e.g. `initdb`) exited unsuccessfully.
    #[error("`{command}` failed ({status}); its output is in {}:\n{tail}", log.display())]
    CommandFailed {
        command: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    /// A server process exited before it became ready.
    #[error("{server} exited during startup ({status}); its log is {}:\n{tail}", log.display())]
    Exited {
        server: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    /// A server process is running but did not answer in time.
    #[error(
        "{server} did not accept connections on {addr} within {timeout:?}; its log is {}:\n{tail}",
        log.display()
    )]
    NotReady {
        server: String,
        addr: SocketAddr,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },

    /// A fixed port asked for by the caller is already taken by another process.
    #[error(
        "cannot start {server} on port {port}: something already listens on 127.0.0.1:{port} \
         (another stack still running? try `etlctl down`, or pick another port)"
    )]
    PortInUse { server: &'static str, port: u16 },

    /// Nothing accepted connections on `addr` within `timeout` (see [`crate::wait_for_tcp`]).
    #[error("nothing accepted TCP connections on {addr} within {timeout:?}")]
    TcpTimeout { addr: SocketAddr, timeout: Duration },

    /// The postgres system user cannot reach the cluster directory.
    #[error(
        "{} is not traversable by the `postgres` user (mode {mode:o}); the cluster directory \
         must sit under world-searchable directories (e.g. set TMPDIR=/tmp, or chmod o+x it)",
        path.display()
    )]
    NotTraversable { path: PathBuf, mode: u32 },

    /// The `postgres` system user does not exist but we run as root.
    #[error(
        "running as root, but there is no `postgres` system user to run initdb/postgres as \
         (install Debian's postgresql-15 package, which creates it)"
    )]
    NoPostgresUser,

    /// A file-system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A Postgres statement or connection failed.
    #[error("postgres at {url}: {source}")]
    Postgres {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A Kafka admin or metadata request to the broker failed.
    #[error("kafka broker at {bootstrap}: {action}: {message}")]
    Kafka {
        bootstrap: String,
        action: String,
        message: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
