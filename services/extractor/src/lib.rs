//! extractor: the first hop of file-etl. It reads labeled review datasets,
//! turns them into TSV chunk files, uploads them over SFTP and tells the
//! sink-verifier what each file holds, so the rows can be proven to land in
//! Postgres once and unaltered.
//!
//! # Layout, in the order data flows
//! - [`source`]: input formats behind the [`Source`](source::Source) trait;
//!   [`AmazonCsv`](source::AmazonCsv) streams `label,title,body` CSV, reporting
//!   bad lines (wrong column count, invalid UTF-8, empty) with their line.
//! - [`transform`]: label scheme → `feedback_type`, language detection (among
//!   the languages of Amazon's marketplaces by default) and filter (ISO 639-1
//!   codes), optional Snowball stemming.
//! - [`language`]: whatlang's language detection, answer for answer, with an
//!   index over its Latin-script trigram profiles that makes it about four
//!   times cheaper (it was most of the extractor's CPU).
//! - [`chunk`]: rows → TSV bytes, row digests, checksum, file name ([`chunk::Manifest`]).
//! - [`upload`]: SFTP upload into `input/`: the gateway's `AnnounceUpload`, the
//!   data under a hidden temporary name, the verifier's `RegisterFile`, then the
//!   rename that publishes the file (registered before published, so the
//!   verifier knows every file a connector can see); `CompleteRun`. Files
//!   already published by an earlier attempt are skipped, stale temporaries of
//!   the run removed; lost connections and an unavailable verifier are retried
//!   (`etl_service::Retry`: backoff with jitter until a per-file deadline).
//! - [`run`]: one run end to end ([`run::extract`]): a reader thread, transform
//!   workers and concurrent uploads joined by bounded channels; chunk numbers
//!   follow reading order and the run id derives from the inputs' content and
//!   the options, so reruns resume without duplicates or gaps.
//! - [`progress`]: live counters, the end-of-run [`Summary`](progress::Summary), progress bar.
//! - [`generate`]: deterministic synthetic reviews (mostly English, some
//!   German/French/Spanish, awkward characters) for demos, tests and benches;
//!   `etl-datagen`'s generator, re-exported (etlctl uses that crate directly).
//! - `api`: gRPC `etl.v1.Extractor` (`StartRun`, `WatchRun`) and the health loop.
//!   `StartRun` reads only files below `--input-dir` (ETL_INPUT_DIRS, default
//!   `./input`; symlinks resolved first), and refuses any other path with one
//!   answer whether it exists or not ([`InputDirs`]). With `ETL_API_TOKEN` (or a
//!   token file) every call needs it, and the calls to the gateway and the
//!   verifier carry it; `--tls-cert`/`--tls-key` serve TLS.
//! - [`config`]: flags and `ETL_*` env twins; [`cli`]: the command line and its
//!   subcommands (`main.rs` only parses and calls it); [`Error`]: the one error type.
//!
//! Tracing: each chunk file is one trace, rooted at an `extract.chunk` span
//! (transform, `sftp.upload`, `verifier.register`); its traceparent is
//! announced to the gateway and sent with every gRPC call.
//!
//! [`start`] binds the gRPC listener and returns a [`Running`] at once.

pub mod chunk;
pub mod cli;
pub mod config;
mod error;
pub mod generate;
pub mod language;
pub mod progress;
pub mod run;
pub mod source;
pub mod transform;
pub mod upload;

mod api;

use std::{net::SocketAddr, sync::Arc};

pub use config::{Config, Endpoints, InputDirs, RunDefaults};
pub use error::Error;
use etl_proto::v1::extractor_server::ExtractorServer;
use etl_service::Shutdown;
pub use generate::generate;
pub use progress::{Progress, Summary};
pub use run::{RunOptions, SourceSpec, extract};
use tokio::task::JoinHandle;

/// The gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "etl.v1.Extractor";

/// A started extractor server.
pub struct Running {
    /// The gRPC listener's bound address.
    pub grpc_addr: SocketAddr,
    grpc_task: JoinHandle<Result<(), Error>>,
    health_task: JoinHandle<()>,
}

impl Running {
    /// Waits until the server stopped (after the shutdown passed to [`start`]
    /// tripped, or the server failed).
    pub async fn wait(self) -> Result<(), Error> {
        let result = self.grpc_task.await.map_err(|e| Error::Task {
            what: "gRPC server",
            reason: e.to_string(),
        })?;
        self.health_task.abort();
        result
    }
}

/// Binds the gRPC listener (port 0 allowed; the bound address is in
/// [`Running`] and logged), starts serving and returns. Health stays
/// NOT_SERVING until the SFTP server and the verifier answer.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    config.validate()?;
    let security = config
        .security
        .server()
        .map_err(|e| Error::Config(e.to_string()))?;
    let client = config
        .security
        .client()
        .map_err(|e| Error::Config(e.to_string()))?;
    let input_dirs = InputDirs::new(&config.input_dirs)?;
    let shutdown = shutdown.child();
    let listener = etl_service::bind("grpc", &config.grpc_addr).await?;
    let grpc_addr = listener.local_addr().map_err(|source| {
        Error::Grpc(etl_service::grpc::GrpcError::Bind {
            addr: config.grpc_addr.clone(),
            source,
        })
    })?;
    let (mut routes, health) = etl_service::grpc::base_routes(SERVICE_NAME).await?;
    tracing::info!(input_dirs = ?input_dirs.dirs(), "StartRun reads below these directories only");
    routes.add_service(ExtractorServer::new(api::ExtractorApi::new(
        config.clone(),
        client.clone(),
        input_dirs,
        shutdown.clone(),
    )));
    let config = Arc::new(config);
    let health_task = tokio::spawn(api::watch_dependencies(
        config.clone(),
        client,
        health,
        shutdown.clone(),
    ));
    let grpc_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let result =
                etl_service::serve_grpc(listener, routes.routes(), &security, shutdown.clone())
                    .await
                    .map_err(Error::from);
            shutdown.trigger();
            result
        })
    };
    tracing::info!(
        %grpc_addr,
        sftp = %config.endpoints.sftp_addr,
        verifier = %config.endpoints.verifier_url,
        gateway = %config.endpoints.gateway_url,
        "extractor started"
    );
    Ok(Running {
        grpc_addr,
        grpc_task,
        health_task,
    })
}
