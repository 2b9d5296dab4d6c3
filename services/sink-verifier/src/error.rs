//! The crate's one error type, and its one mapping to gRPC status codes.

/// Everything that can go wrong in the verifier. Each message names the file, run
/// or server involved and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Grpc(#[from] etl_service::grpc::GrpcError),

    #[error("invalid --database-url / ETL_DATABASE_URL: {0}")]
    DatabaseUrl(String),

    /// The API token or TLS files (`etl_service::security`).
    #[error(transparent)]
    Security(#[from] etl_service::security::SecurityError),

    #[error("invalid manifest for file {file:?}: {reason}")]
    InvalidManifest { file: String, reason: String },

    #[error(
        "file {file:?} is already registered with different content ({reason}); file names must be unique across runs"
    )]
    Conflict { file: String, reason: String },

    #[error("unknown run {0:?}: no file of it was registered")]
    UnknownRun(String),

    #[error("run {run_id:?}: {reason}")]
    RunState { run_id: String, reason: String },

    #[error("postgres at {server}: {what}: {}", pg_detail(source))]
    Postgres {
        server: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(
        "table {table:?}, column {column:?}: cannot read Postgres type {pg_type} (supported: boolean, smallint/integer/bigint, real/double precision, text/varchar, timestamptz/timestamp; others are read as text)"
    )]
    UnsupportedColumn {
        table: String,
        column: String,
        pg_type: String,
    },

    #[error(
        "the verifier's stored state for file {file:?} (schema etl_verifier) is damaged: {reason}; delete the file's rows there and register it again"
    )]
    StoredState { file: String, reason: String },

    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::InvalidManifest { .. } => tonic::Status::invalid_argument(message),
            Error::Conflict { .. } => tonic::Status::already_exists(message),
            Error::UnknownRun(_) => tonic::Status::not_found(message),
            Error::RunState { .. } => tonic::Status::failed_precondition(message),
            Error::Postgres { .. } => tonic::Status::unavailable(message),
            Error::Grpc(_)
            | Error::DatabaseUrl(_)
            | Error::Security(_)
            | Error::UnsupportedColumn { .. }
            | Error::StoredState { .. }
            | Error::Task(_) => tonic::Status::internal(message),
        }
    }
}

/// tokio-postgres shows a server error as just "db error"; the server's own
/// message (and SQLSTATE) is what a reader can act on.
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // "error connecting to server" alone hides the cause (refused, timeout).
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
