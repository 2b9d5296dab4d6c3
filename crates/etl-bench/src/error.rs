//! The crate's one error type. Every variant names what was being done and
//! where to look (a log file, a server address), because a benchmark that fails
//! half-way through is usually a stack that did not come up.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },

    #[error("`{what}` failed ({status}); the end of {log}:\n{tail}")]
    Command {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{what} is not what etl-bench expects: {reason}")]
    Unexpected { what: String, reason: String },

    #[error("Kafka at {bootstrap}: {reason}")]
    Kafka { bootstrap: String, reason: String },

    #[error("Postgres at {url}: {reason}")]
    Postgres { url: String, reason: String },

    #[error(transparent)]
    Sftp(#[from] etl_sftp::SftpError),

    #[error("the steady phase's files: {0}")]
    Extractor(#[from] extractor::Error),

    #[error("{0}")]
    Timeout(String),

    #[error("{0}")]
    Config(String),

    #[error("interrupted: the stack in {} was stopped", dir.display())]
    Interrupted { dir: PathBuf },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn kafka(bootstrap: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error + '_ {
        move |e| Error::Kafka {
            bootstrap: bootstrap.to_owned(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn postgres(url: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
        move |e| Error::Postgres {
            url: url.to_owned(),
            // tokio-postgres' Display hides the server's message ("db error");
            // the source carries it.
            reason: match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
