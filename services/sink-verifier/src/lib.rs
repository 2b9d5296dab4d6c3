//! The sink-verifier: proves that every row of every registered file arrived in
//! Postgres once and unaltered, and reports how long it took.
//!
//! The extractor knows what it wrote; Postgres knows what arrived. The verifier
//! holds the first (a digest per row), reads the second back, and compares them
//! with the same digest function (`etl_core::digest`), so a row that was lost,
//! duplicated or changed anywhere on the path — SFTP, the source, Kafka, the
//! sink — shows up in the run's report.
//!
//! # Layout
//! In the order data flows:
//! - [`api`]: gRPC `etl.v1.SinkVerifier`. `RegisterFile` brings a file's manifest,
//!   `CompleteRun` says how many files a run has, `GetReport`/`WatchReport` give
//!   the run's report.
//! - [`manifest`]: validates manifests (digest count, checksum) and keeps them per
//!   run in the [`manifest::Registry`], with each file's latest check and a watch
//!   channel per run carrying its report.
//! - [`watch`]: decides *when* to check: the sink's `NOTIFY etl_rows` on a
//!   dedicated connection, each registration, and a poll of unverified files; it
//!   reconnects after Postgres goes away and drives the health status.
//! - [`verify`]: checks *one* file: reads its rows back by `_etl_file`, decodes
//!   each column by its Postgres type, renders it as the text it was written as,
//!   digests and counts (landed, missing, altered, duplicates), and emits the
//!   file's `verify file` span into the file's trace.
//! - [`report`]: sums the file checks into the run report: latency percentiles
//!   (upload to last row commit) and the run's elapsed time.
//! - [`error`]: the crate's [`Error`] and its mapping to gRPC status codes.
//!
//! [`start`] wires them: it binds the gRPC listener, spawns the server and the
//! watcher, and returns at once; Postgres is awaited in the background with the
//! health status NOT_SERVING until it answers.

pub mod api;
pub mod error;
pub mod manifest;
pub mod report;
pub mod verify;
pub mod watch;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use etl_proto::v1::sink_verifier_server::SinkVerifierServer;
use etl_service::Shutdown;
use tokio::{sync::mpsc, task::JoinHandle};

pub use error::Error;

/// The service name health and reflection report.
pub const SERVICE_NAME: &str = "etl.v1.SinkVerifier";

/// The verifier's settings; every flag has an `ETL_*` environment twin.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "ETL_GRPC_ADDR", default_value = "127.0.0.1:50054")]
    pub grpc_addr: String,

    /// Postgres holding the sink's table (URL or key=value form).
    #[arg(
        long,
        env = "ETL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/nlp_db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The sink's table, optionally `schema.table`.
    #[arg(long, env = "ETL_TABLE", default_value = "review")]
    pub table: String,

    /// How often unverified files are checked without a NOTIFY.
    #[arg(long, env = "ETL_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
}

impl Config {
    /// The defaults, as the binary would have them without flags or environment.
    pub fn new(grpc_addr: &str, database_url: &str) -> Self {
        Self {
            grpc_addr: grpc_addr.to_string(),
            database_url: database_url.to_string(),
            table: "review".to_string(),
            poll_interval_ms: 1000,
        }
    }
}

/// A started verifier.
pub struct Running {
    /// The address the gRPC server is bound to.
    pub grpc_addr: SocketAddr,
    server: JoinHandle<Result<(), etl_service::grpc::GrpcError>>,
    watcher: JoinHandle<()>,
    shutdown: Shutdown,
}

impl Running {
    /// Runs until `shutdown` trips (or the server fails), then stops the watcher.
    pub async fn wait(self) -> Result<(), Error> {
        let served = self.server.await;
        // The server ends only on shutdown or failure: either way, stop watching.
        self.shutdown.trigger();
        self.watcher.await?;
        served??;
        Ok(())
    }
}

/// Binds the gRPC listener, spawns the server and the Postgres watcher, and
/// returns at once.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let mut db: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::DatabaseUrl(e.to_string()))?;
    if db.get_connect_timeout().is_none() {
        db.connect_timeout(Duration::from_secs(5));
    }
    let listener = etl_service::bind("grpc", &config.grpc_addr).await?;
    let grpc_addr = listener.local_addr().map_err(|source| {
        Error::Grpc(etl_service::grpc::GrpcError::Bind {
            addr: config.grpc_addr.clone(),
            source,
        })
    })?;
    let (mut routes, health) = etl_service::grpc::base_routes(SERVICE_NAME).await?;

    let registry = Arc::new(manifest::Registry::new());
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    routes.add_service(SinkVerifierServer::new(api::Api::new(
        registry.clone(),
        wake_tx.clone(),
        shutdown.clone(),
    )));
    tracing::info!(
        database = %watch::describe_database(&db),
        table = %config.table,
        poll_interval_ms = config.poll_interval_ms,
        "sink-verifier starting"
    );
    let watcher = watch::Watcher {
        db,
        table: config.table,
        poll_interval: Duration::from_millis(config.poll_interval_ms.max(10)),
        registry,
        wake_tx,
        wake_rx,
        health,
        shutdown: shutdown.clone(),
    };
    let watcher = tokio::spawn(watcher.run());
    let server = tokio::spawn(etl_service::serve_grpc(
        listener,
        routes.routes(),
        shutdown.clone(),
    ));
    Ok(Running {
        grpc_addr,
        server,
        watcher,
        shutdown,
    })
}
