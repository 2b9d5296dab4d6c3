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
//! - `api`: gRPC `etl.v1.SinkVerifier` (with `ETL_API_TOKEN` or a token file,
//!   every call but health and reflection needs the token; `--tls-cert` and
//!   `--tls-key` serve TLS). `RegisterFile` brings a file's manifest,
//!   `CompleteRun` says how many files a run has, `GetReport`/`WatchReport` give
//!   the run's report as stored. Registration and completion answer once stored.
//! - `manifest`: validates manifests (digest count, checksum), on the way in and
//!   when read back from the store.
//! - `store`: the verifier's state in Postgres, schema `etl_verifier` (runs,
//!   manifests with their row digests, per-file results, rejections, content
//!   matches), created (or upgraded) at startup. The database is the truth.
//! - `registry`: the unfinished runs in memory, written through to the store,
//!   with a watch channel per run that wakes its watchers; reloaded from the
//!   store after a restart. A finished run leaves memory.
//! - `watch`: decides *when* to check: the sink's `NOTIFY etl_rows` on a
//!   dedicated connection, each registration, and a poll of unverified files; it
//!   reconnects after Postgres goes away and drives the health status.
//! - `verify`: checks *one* file: reads its rows back by `_etl_file`, decodes
//!   each column by its Postgres type, renders it as the text it was written as,
//!   digests and counts (landed, missing, altered, duplicates), and emits the
//!   file's `verify file` span into the file's trace.
//! - `duplicates`: rows whose content landed under two file names, told apart
//!   as a copied file (a landed file uploaded again under a new name, a rerun
//!   of a chunk under a new run id) or overlapping rows (files that share some
//!   rows, like a bigger input with a smaller one's start).
//! - `gateway`: with `--gateway-url`, follows the sftp-gateway's rejected files
//!   (`error/`) of `--sftp-user` (default `etl`), with the same token, so a file the connector refused ends its run as FAILED with the
//!   reason instead of keeping it waiting.
//! - `report`: sums the files into the run report: latency percentiles, the
//!   run's elapsed time, and its state (RUNNING, then PASSED or FAILED).
//! - `error`: the crate's [`Error`] and its mapping to gRPC status codes.
//!
//! [`start`] wires them: it binds the gRPC listener, spawns the server, the
//! watcher and the gateway watch, and returns at once; Postgres is awaited in
//! the background with the health status NOT_SERVING until it answers.
//!
//! # Nothing lost when the verifier dies
//! `RegisterFile` stores the manifest and its row digests in one transaction
//! before it answers, `CompleteRun` stores the file count, and each check that
//! changes a file's result is stored. A verifier started on the same database
//! (after a kill -9, or a second one beside it) reloads every unfinished run and
//! checks its files again; files verified before keep their latency. A file's
//! result is never written back from verified to unverified, and every write is
//! keyed by file name, so two verifiers on one database never count twice.
//!
//! # Two verifiers on one database
//! Any number may run side by side (scale-out, or a spare): the extractor may
//! register a run's files with either, and either answers about every run with
//! the same figures, because the figures are never one process's memory:
//! - reports (GetReport, WatchReport) are built from the stored files;
//! - both hear every NOTIFY and check the same files, but a check is stored
//!   only while the file is unverified and its run not ended, under the run's
//!   row lock (`SELECT … FOR SHARE`), so the first verified check wins and the
//!   other verifier reloads the run from the store;
//! - the end of a run is one transaction holding the run's row `FOR UPDATE`
//!   that decides PASSED or FAILED from the stored files: whichever verifier
//!   ends it, the other finds it ended and reports that same end;
//! - marking a file verified and looking up its rows in other runs' verified
//!   files is one transaction under an advisory lock, so of two copies proven
//!   at the same moment by two verifiers, the second still finds the first
//!   (and is named its copy);
//! - a file nobody registered is compared at each of its NOTIFYs, and the
//!   comparison that saw the most of its rows is the one stored, whichever
//!   verifier commits last.
//!
//! Each verifier's memory only decides what to check next; it catches up with
//! the other's registrations through the NOTIFYs of their rows and, at the
//! latest, its next poll.
//!
//! # Latency: upload complete to rows committed
//! A file's latency starts at the manifest's `uploaded_at_unix_ms` (set by the
//! extractor once the upload's data is fully written, just before the rename
//! publishes it) and ends when the transaction that wrote the file's last rows
//! *committed* — not at `_etl_loaded_at`, which is `now()`, the start of that
//! transaction. The end is, in order of preference:
//! 1. `pg_xact_commit_timestamp(xmin)` of the rows, when the server runs with
//!    `track_commit_timestamp = on` (checked with `SHOW track_commit_timestamp`
//!    at each connect): exact, and still known after a verifier restart;
//! 2. otherwise, when the file's latest `NOTIFY etl_rows` reached the verifier:
//!    Postgres delivers a notification when its transaction commits, and the
//!    verifier listens on a connection that does nothing else, so this is the
//!    commit plus a sub-millisecond delivery on one host;
//! 3. otherwise (rows that landed while the verifier was down, with commit
//!    timestamps off), the latest `_etl_loaded_at`: a lower bound.
//!
//! The run's `elapsed_ms` runs from its first upload to its last verified
//! commit; `latency` gives p50, p95, p99 and max over its verified files.
//!
//! # Run state
//! A run is RUNNING until it is complete: CompleteRun said how many files it
//! has, all are registered, and each is verified or rejected. It is then PASSED
//! if every row of every file landed once and unaltered, no file was rejected
//! and none of its files is a copy or has one; otherwise FAILED. A copy is a
//! file whose landed rows are the same multiset of contents as another landed
//! file's, the two not of one run. A copy found after a run passed (a file
//! uploaded again later) turns it FAILED. Rows whose content also landed under
//! a file that is no copy (overlapping rows: a bigger input that starts with a
//! smaller one's rows, the same review in two datasets) are counted in the
//! report and leave the state alone.

mod api;
mod duplicates;
mod error;
mod gateway;
mod manifest;
mod registry;
mod report;
mod store;
mod verify;
mod watch;

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

    /// Postgres holding the sink's table (URL or key=value form). The verifier
    /// keeps its own state there too, in schema `etl_verifier`.
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

    /// How often unverified files are checked without a NOTIFY (and memory is
    /// synced with the stored runs).
    #[arg(long, env = "ETL_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// sftp-gateway gRPC URL (e.g. http://127.0.0.1:50052). Files the connector
    /// moved to `error/` are then reported as rejected and end their run as
    /// FAILED; without it, a rejected file keeps its run RUNNING.
    #[arg(long, env = "ETL_GATEWAY_URL")]
    pub gateway_url: Option<String>,

    /// The SFTP user whose rejected files are watched (the gateway's WatchFiles
    /// takes one user: the one the extractor uploads as).
    #[arg(long, env = "ETL_SFTP_USER", default_value = "etl")]
    pub sftp_user: String,

    /// The gRPC API's token and TLS (`--api-token-file`, `--tls-cert`, …); the token
    /// and `--tls-ca` also serve the calls to the gateway.
    #[command(flatten)]
    pub security: etl_service::ApiSecurity,
}

impl Config {
    /// The defaults, as the binary would have them without flags or environment.
    pub fn new(grpc_addr: &str, database_url: &str) -> Self {
        Self {
            grpc_addr: grpc_addr.to_string(),
            database_url: database_url.to_string(),
            table: "review".to_string(),
            poll_interval_ms: 1000,
            gateway_url: None,
            sftp_user: "etl".to_string(),
            security: etl_service::ApiSecurity::default(),
        }
    }
}

/// A started verifier.
pub struct Running {
    /// The address the gRPC server is bound to.
    pub grpc_addr: SocketAddr,
    server: JoinHandle<Result<(), etl_service::grpc::GrpcError>>,
    watcher: JoinHandle<()>,
    gateway: Option<JoinHandle<()>>,
    shutdown: Shutdown,
}

impl Running {
    /// Runs until `shutdown` trips (or the server fails), then stops the watchers.
    pub async fn wait(self) -> Result<(), Error> {
        let served = self.server.await;
        // The server ends only on shutdown or failure: either way, stop watching.
        self.shutdown.trigger();
        self.watcher.await?;
        if let Some(gateway) = self.gateway {
            gateway.await?;
        }
        served??;
        Ok(())
    }
}

/// Binds the gRPC listener, spawns the server, the Postgres watcher and (with
/// a gateway URL) the watch of rejected files, and returns at once.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let security = config.security.server()?;
    let client = config.security.client()?;
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

    let server_name = etl_pg::describe(&db);
    let store = Arc::new(store::Store::new(db.clone(), &server_name));
    let registry = Arc::new(registry::Registry::new(store));
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    routes.add_service(SinkVerifierServer::new(api::Api::new(
        registry.clone(),
        wake_tx.clone(),
        shutdown.clone(),
    )));
    let gateway_url = config.gateway_url.filter(|u| !u.trim().is_empty());
    tracing::info!(
        database = %server_name,
        table = %config.table,
        poll_interval_ms = config.poll_interval_ms,
        gateway = gateway_url.as_deref().unwrap_or("none (rejected files are not seen)"),
        "sink-verifier starting"
    );
    let gateway = gateway_url.map(|url| {
        tokio::spawn(gateway::watch_rejections(
            url,
            client,
            config.sftp_user.clone(),
            registry.clone(),
            shutdown.clone(),
        ))
    });
    let watcher = watch::Watcher {
        db,
        table: config.table,
        poll_interval: Duration::from_millis(config.poll_interval_ms.max(10)),
        registry,
        wake_tx,
        wake_rx,
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let watcher = tokio::spawn(watcher.run());
    let server = tokio::spawn(etl_service::serve_until_shutdown(
        listener,
        routes.routes(),
        health,
        security,
        shutdown.clone(),
    ));
    Ok(Running {
        grpc_addr,
        server,
        watcher,
        gateway,
        shutdown,
    })
}
