//! The extractor's one error type, and its one mapping to gRPC status codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    // The I/O error is part of the message (gRPC clients see only the
    // message), so it is deliberately not a `#[source]`: `{:#}` would repeat it.
    #[error("cannot read input {path}: {error} (check the path and that this process may read it)")]
    Input {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A bad row in `--strict` mode.
    #[error(
        "{path}: line {line}: {reason} (the run stopped because of --strict; drop --strict to skip and count bad rows instead)"
    )]
    BadRow {
        path: String,
        line: u64,
        reason: String,
    },
    #[error("cannot write chunk file {path}: {error} (check --output-dir and free space)")]
    Output {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Sftp(#[from] etl_sftp::SftpError),
    #[error(
        "sink-verifier at {url}: {reason} (is it running? check ETL_VERIFIER_URL, or pass --no-register to upload without registering)"
    )]
    Verifier { url: String, reason: String },
    /// Failures that may pass (a lost connection, a restarting server) went on
    /// until the deadline of one chunk file or call.
    #[error(
        "{what}: gave up after {secs} s and {attempts} attempts, {server} still failing: {last} (the run stopped unfinished: once {server} is back, start it again with the same inputs and options, or the same run id, and it resumes without loading anything twice; --upload-deadline-secs sets how long to keep trying)"
    )]
    GaveUp {
        what: String,
        server: String,
        secs: u64,
        attempts: u32,
        last: String,
    },
    #[error(transparent)]
    Grpc(#[from] etl_service::grpc::GrpcError),
    #[error(
        "the run was stopped by a shutdown before it finished; run it again with the same run id to resume"
    )]
    Cancelled,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("no run {0:?} is known to this extractor (runs are kept in memory until it restarts)")]
    RunNotFound(String),
    #[error("run {0:?} is already in progress")]
    RunInProgress(String),
    #[error("{what} stopped unexpectedly: {reason}")]
    Task { what: &'static str, reason: String },
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidRequest(msg) => tonic::Status::invalid_argument(msg),
            e @ Error::Config(_) => tonic::Status::invalid_argument(e.to_string()),
            e @ Error::Input { .. } => tonic::Status::failed_precondition(e.to_string()),
            e @ Error::RunNotFound(_) => tonic::Status::not_found(e.to_string()),
            e @ Error::RunInProgress(_) => tonic::Status::already_exists(e.to_string()),
            e @ (Error::Sftp(_) | Error::Verifier { .. } | Error::GaveUp { .. }) => {
                tonic::Status::unavailable(e.to_string())
            }
            other => tonic::Status::internal(other.to_string()),
        }
    }
}
