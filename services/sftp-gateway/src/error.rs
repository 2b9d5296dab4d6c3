//! The gateway's one error type, and its one mapping to gRPC status codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "cannot prepare {path}: {source} (check ETL_DATA_DIR and that this process may write there)"
    )]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "host key {path}: {reason} (point ETL_SFTP_HOST_KEY at an OpenSSH private key without passphrase, or remove the file to have a new ed25519 key generated)"
    )]
    HostKey { path: PathBuf, reason: String },
    #[error(
        "authorized keys of user {user:?} in {path}: {reason} (expected OpenSSH authorized_keys lines, e.g. the content of id_ed25519.pub)"
    )]
    AuthorizedKeys {
        user: String,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Grpc(#[from] etl_service::grpc::GrpcError),
    #[error("SFTP listener on {addr} failed: {source}")]
    Listener {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{what} stopped unexpectedly: {reason}")]
    Task { what: &'static str, reason: String },
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidRequest(msg) => tonic::Status::invalid_argument(msg),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}
