//! connect-manager: runs the connectors that carry a file's rows from the SFTP
//! server through Kafka into Postgres.
//!
//! # The path of one file
//! 1. An upload completes in the SFTP `input/` directory. The *source*
//!    connector hears of it from sftp-gateway's `WatchFiles` stream (or finds it
//!    with its poll), reads it over SFTP, parses it (header row, tab or comma),
//!    infers a lossless type per column, and produces one Kafka record per row:
//!    key `{file}:{row}`, value the Kafka Connect JSON envelope, headers
//!    `traceparent`, `etl.file`, `etl.row`, `etl.run`. Once every record is
//!    acknowledged, the file moves to `finished/`; a file that does not parse
//!    moves to `error/` with a `<name>.error.txt` naming the line.
//! 2. The *sink* connector consumes the topic in batches, decodes each record,
//!    and writes the batch in one Postgres transaction: `COPY` into a temp
//!    table, `INSERT … ON CONFLICT (_etl_file, _etl_row)`, `NOTIFY etl_rows`.
//!    Only after the commit does it commit the Kafka offsets, so a crash
//!    replays rather than loses, and a replay changes nothing.
//!
//! # Layout, in the order data flows
//! - [`config`]: flags and `ETL_*` env twins ([`Config`]).
//! - `connector`: a connector's name and flat config; `connector.class` picks
//!   the kind; validation at create time (config in, task out).
//! - `options`: typed reads of the flat option maps, errors naming the option.
//! - `source`: SFTP → Kafka (`source::config` for its options, `source::watch`
//!   for the gateway's notices).
//! - `kafka`: producer, consumer, topic creation and the health probe.
//! - `sink`: Kafka → Postgres batches and offset commits (`sink::config` parses
//!   JDBC URLs and the sink's options).
//! - `postgres`: DDL (create, add column, widen) and the COPY + upsert write.
//! - `registry`: the running connectors, persisted in `<data-dir>/connectors.json`
//!   (standalone) or mirrored from the cluster's config topic (distributed).
//! - `cluster`: distributed mode: the config, status and offset topics, and the
//!   worker group (a Kafka consumer group) that shares the tasks out.
//! - `source::claims`, `source::offsets`: a source file claimed by one worker
//!   at a time; source offsets in the offset topic.
//! - `status`: each connector's state and counters.
//! - `api`: gRPC `etl.v1.ConnectManager`; `rest`: the Kafka-Connect-compatible
//!   REST API. Both need the API token when one is set (`ETL_API_TOKEN` or
//!   `--api-token-file`) and serve TLS with `--tls-cert`/`--tls-key`.
//! - `secrets`: secret options shown `[hidden]` in every API response, and
//!   taken out of statuses and config errors (and the log lines that carry
//!   them); `${env:…}`/`${file:…}` references in configs are resolved when a
//!   connector is parsed (`connector`), never stored resolved.
//! - [`Error`]: the one error type and its gRPC mapping.
//!
//! [`start`] binds both listeners, restores the stored connectors and returns
//! a [`Running`] at once; health turns SERVING once Kafka answers.

pub mod config;
mod error;
pub mod status;

mod api;
#[doc(hidden)]
pub mod bench_api;
mod cluster;
mod connector;
mod copy;
mod kafka;
mod options;
mod postgres;
mod registry;
mod rest;
mod secrets;
mod sink;
mod source;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use config::{Compression, Config, Mode};
pub use connector::Kind;
pub use error::Error;
use etl_proto::v1::connect_manager_server::ConnectManagerServer;
use etl_service::{Health, Shutdown};
use registry::Registry;
use tokio::task::JoinHandle;

/// The gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "etl.v1.ConnectManager";

/// A started connect-manager.
pub struct Running {
    /// The gRPC listener's bound address.
    pub grpc_addr: SocketAddr,
    /// The REST listener's bound address.
    pub rest_addr: SocketAddr,
    registry: Arc<Registry>,
    grpc_task: JoinHandle<Result<(), Error>>,
    rest_task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Waits until both servers stopped (after the shutdown passed to [`start`]
    /// tripped, or one of them failed), then until every connector stopped.
    pub async fn wait(self) -> Result<(), Error> {
        let grpc = join("gRPC server", self.grpc_task).await;
        let rest = join("REST server", self.rest_task).await;
        self.registry.stop_all().await;
        grpc.and(rest)
    }
}

async fn join(what: &'static str, task: JoinHandle<Result<(), Error>>) -> Result<(), Error> {
    task.await.map_err(|e| Error::Task {
        what,
        reason: e.to_string(),
    })?
}

/// Binds the gRPC and REST listeners (port 0 allowed; see [`Running`]),
/// restores the connectors stored in the data directory and returns. Kafka is
/// awaited in the background: health is NOT_SERVING until it answers.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    kafka::set_compression(config.producer_compression_type);
    let security = config.security.server()?;
    let client = config.security.client()?;
    // A failing server stops its sibling through this child, not the caller's token.
    let shutdown = shutdown.child();
    let cluster = match config.mode {
        Mode::Standalone => None,
        Mode::Distributed => Some(Arc::new(cluster::Cluster::new(
            cluster::ClusterConfig {
                group_id: config.group_id.clone(),
                config_topic: config.config_storage_topic.clone(),
                status_topic: config.status_storage_topic.clone(),
                offset_topic: config.offset_storage_topic.clone(),
                assignment_topic: config.assignment_topic.clone(),
            },
            &config.kafka_brokers,
            incarnation(&registry::instance_of(&config.data_dir)),
        )?)),
    };
    let registry = Arc::new(Registry::open(
        &config.data_dir,
        &config.kafka_brokers,
        client,
        cluster,
        shutdown.clone(),
    )?);

    let grpc_listener = etl_service::bind("grpc", &config.grpc_addr).await?;
    let rest_listener = etl_service::bind("rest", &config.rest_addr).await?;
    let local = |l: &tokio::net::TcpListener, addr: &str| {
        l.local_addr().map_err(|source| Error::Listener {
            addr: addr.to_string(),
            source,
        })
    };
    let grpc_addr = local(&grpc_listener, &config.grpc_addr)?;
    let rest_addr = local(&rest_listener, &config.rest_addr)?;
    // Kafka Connect's worker_id is the worker's REST host:port; a listener on
    // every interface (a container's) is named by the host name instead.
    registry.set_worker_id(advertised(rest_addr));

    let rest_security = security.clone();
    let (mut routes, health) = etl_service::grpc::base_routes(SERVICE_NAME).await?;
    routes.add_service(ConnectManagerServer::new(api::ConnectApi {
        registry: registry.clone(),
    }));
    let grpc_task = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        tokio::spawn(async move {
            etl_service::serve_until_shutdown(
                grpc_listener,
                routes.routes(),
                health,
                security,
                shutdown,
            )
            .await
            .map_err(Error::from)
        })
    };
    let rest_task = {
        let shutdown = shutdown.clone();
        let router = rest::router(registry.clone());
        let addr = config.rest_addr.clone();
        let security = rest_security;
        tokio::spawn(async move {
            let result = etl_service::http::serve_http(
                rest_listener,
                router,
                &security,
                rest::unauthorized,
                shutdown.clone(),
            )
            .await
            .map_err(|source| Error::Listener { addr, source });
            if result.is_err() {
                shutdown.trigger();
            }
            result
        })
    };
    tokio::spawn(watch_kafka(
        config.kafka_brokers.clone(),
        registry.clone(),
        health,
        shutdown.clone(),
    ));
    let restored = registry.restore().await?;
    tracing::info!(
        %grpc_addr,
        %rest_addr,
        brokers = %config.kafka_brokers,
        data_dir = %config.data_dir.display(),
        connectors = restored,
        "connect-manager started"
    );
    Ok(Running {
        grpc_addr,
        rest_addr,
        registry,
        grpc_task,
        rest_task,
    })
}

/// This run of the worker, as the worker group and the source's file claims
/// name it: the worker's stable id and a suffix new at every start. A worker
/// restarted after a kill -9 is then a new member, and the claims its previous
/// run left are recognised as a dead run's, to be taken over, whether or not
/// the restarted worker runs a source task itself.
fn incarnation(instance: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!(
        "{instance}-{:06x}",
        mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40
    )
}

/// How other workers and clients name this worker: the REST listener's
/// address, with the host name in place of an unspecified IP.
fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        if !host.is_empty() {
            return format!("{host}:{}", addr.port());
        }
    }
    addr.to_string()
}

/// Keeps the health status in step with Kafka and the connectors: SERVING while
/// a metadata request is answered and no connector is stalled (records waiting,
/// nothing moved for [`status::STALL_AFTER`]), so a supervisor or an operator
/// sees a wedged sink instead of a green light.
async fn watch_kafka(brokers: String, registry: Arc<Registry>, health: Health, shutdown: Shutdown) {
    let client = match kafka::probe_client(&brokers) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(%brokers, error = %e, "cannot create the Kafka health probe; staying NOT_SERVING");
            return;
        }
    };
    let mut serving = false;
    let mut failures = 0u32;
    loop {
        let probe = client.clone();
        let mut answer = tokio::task::spawn_blocking(move || kafka::answers_metadata(&probe))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if answer.is_ok() {
            answer = registry.cluster_ready();
        }
        if answer.is_ok() {
            let stalled = registry.stalled().await;
            if !stalled.is_empty() {
                answer = Err(format!(
                    "connectors stalled (records waiting, nothing written for {}s): {}",
                    status::STALL_AFTER.as_secs(),
                    stalled.join(", ")
                ));
            }
        }
        match answer {
            Ok(()) if !serving => {
                tracing::info!(%brokers, "Kafka answers; SERVING");
                health.set(true).await;
                serving = true;
                failures = 0;
            }
            Ok(()) => {}
            Err(e) => {
                failures += 1;
                if serving || failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(%brokers, error = %e, "not serving");
                }
                if serving {
                    health.set(false).await;
                    serving = false;
                }
            }
        }
        let pause = if serving {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        if !shutdown.sleep(pause).await {
            return;
        }
    }
}
