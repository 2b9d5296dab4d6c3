//! The service's one error type, and its one mapping to gRPC status codes
//! (the REST API maps the same variants to Kafka Connect's HTTP codes in
//! `rest`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connector config that cannot run: names the connector and the option.
    #[error("connector {name:?}: {message}")]
    InvalidConfig { name: String, message: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("connector {0:?} not found")]
    NotFound(String),
    #[error("connector {0:?} already exists")]
    AlreadyExists(String),
    #[error("task {task} of connector {connector:?} not found")]
    TaskNotFound { connector: String, task: u32 },
    /// The request needs the connector in another state (Kafka Connect answers
    /// these with 400, e.g. offsets changed on a connector that is not STOPPED).
    #[error("{0}")]
    WrongState(String),
    /// Something outside this request is in the way (a consumer group that still
    /// has members): trying again later may succeed.
    #[error("{0}")]
    Conflict(String),
    /// The cluster cannot take the request now (distributed mode, Kafka away
    /// or the config topic not read yet): trying again later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A Kafka Connect feature this service does not offer; the message says why.
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "cannot {action} {path}: {source} (check ETL_DATA_DIR and that this process may write there)"
    )]
    DataDir {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connector store {path} is not valid JSON: {reason} (fix or remove the file)")]
    Store { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listener {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Grpc(#[from] etl_service::grpc::GrpcError),
    /// The API token or TLS files (`--api-token-file`, `--tls-cert`, …).
    #[error(transparent)]
    Security(#[from] etl_service::security::SecurityError),
    #[error("Kafka ({brokers}): {message}")]
    Kafka { brokers: String, message: String },
    #[error("{what} stopped unexpectedly: {reason}")]
    Task { what: &'static str, reason: String },
}

impl Error {
    pub(crate) fn config(name: &str, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::InvalidConfig { .. } | Error::InvalidRequest(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            Error::NotFound(_) | Error::TaskNotFound { .. } => {
                tonic::Status::not_found(e.to_string())
            }
            Error::AlreadyExists(_) => tonic::Status::already_exists(e.to_string()),
            Error::WrongState(_) => tonic::Status::failed_precondition(e.to_string()),
            Error::Conflict(_) => tonic::Status::aborted(e.to_string()),
            Error::Unsupported(_) => tonic::Status::unimplemented(e.to_string()),
            Error::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}
