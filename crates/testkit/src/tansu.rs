//! A tansu broker: Kafka's wire protocol in one Rust binary, no JVM.
//!
//! The broker is started as
//! ```text
//! tansu broker --listener-url tcp://127.0.0.1:PORT \
//!              --advertised-listener-url tcp://127.0.0.1:PORT \
//!              --storage-engine memory://tansu/        (or sqlite://tansu.db, cwd = data dir)
//! ```
//! with tansu's own environment twins (`STORAGE_ENGINE`, `LISTENER_URL`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, …) removed, so a test's environment cannot redirect it.
//! tansu resolves `sqlite://PATH` against its working directory (an absolute path gets
//! doubled), hence the relative `tansu.db` and cwd = the data directory.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rustix::process::Signal;

use crate::error::{Error, Result};
use crate::logs;
use crate::names::unique_name;
use crate::net::{free_port, port_in_use};
use crate::process::{STOP_GRACE, ServerProcess, ServerSpec};

/// Environment variable naming the tansu binary.
pub const TANSU_BIN_ENV: &str = "TANSU_BIN";

const INSTALL_HINT: &str = "install it with `cargo install tansu --locked --features \
                            dynostore,libsql` (about 7 minutes; without those features it \
                            cannot store anything), or set TANSU_BIN to the binary";

/// tansu reads these from the environment; the command line must be the only input.
const TANSU_ENV: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How many fresh ports [`Broker::start`] tries when it loses a port race.
const PORT_ATTEMPTS: usize = 3;

/// Where the broker keeps its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `memory://tansu/`: fastest (demos, benchmarks, most tests); gone when it stops.
    Memory,
    /// `sqlite://tansu.db` in this directory (created if missing): records and committed
    /// offsets survive a restart. Several times slower to consume than memory.
    Sqlite(PathBuf),
}

impl Storage {
    fn engine_url(&self) -> &'static str {
        match self {
            Storage::Memory => "memory://tansu/",
            Storage::Sqlite(_) => "sqlite://tansu.db",
        }
    }
}

/// How to start a [`Broker`]; see [`Broker::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct BrokerBuilder {
    storage: Storage,
    port: Option<u16>,
    log_dir: Option<PathBuf>,
    startup_timeout: Duration,
}

impl BrokerBuilder {
    /// Listen on `port` instead of a free one. Starting fails if the port is taken.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Write the broker log to `<log_dir>/tansu-<port>.log`. Default: `<dir>/tansu.log`
    /// for sqlite storage, the running test's log directory for memory storage.
    pub fn log_dir(mut self, log_dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(log_dir.into());
        self
    }

    /// How long to wait for the broker to answer a metadata request; default 60 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the broker and waits until it answers a Kafka metadata request that
    /// advertises 127.0.0.1:PORT. Blocking, like [`crate::PgBuilder::start`].
    pub fn start(self) -> Result<Broker> {
        let bin = tansu_bin()?;
        let cwd = match &self.storage {
            Storage::Sqlite(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("cannot create tansu data directory", dir, e))?;
                dir.canonicalize()
                    .map_err(|e| Error::io("cannot resolve tansu data directory", dir, e))?
            }
            Storage::Memory => match &self.log_dir {
                Some(dir) => dir.clone(),
                None => logs::test_log_dir()?,
            },
        };
        let mut port = match self.port {
            Some(port) if port_in_use(port) => {
                return Err(Error::PortInUse {
                    server: "tansu",
                    port,
                });
            }
            Some(port) => port,
            None => free_port(),
        };
        let mut attempt = 1;
        loop {
            let log = match (&self.log_dir, &self.storage) {
                (Some(dir), _) => dir.join(format!("tansu-{port}.log")),
                (None, Storage::Sqlite(_)) => cwd.join("tansu.log"),
                (None, Storage::Memory) => cwd.join(format!("tansu-{port}.log")),
            };
            match self.start_broker(&bin, &cwd, port, &log) {
                Ok(process) => {
                    tracing::info!(port, storage = ?self.storage, log = %log.display(), "tansu started");
                    return Ok(Broker {
                        process: Some(process),
                        port,
                        storage: self.storage,
                    });
                }
                Err(Error::Exited { tail, .. })
                    if self.port.is_none()
                        && attempt < PORT_ATTEMPTS
                        && tail.to_lowercase().contains("in use") =>
                {
                    tracing::debug!(port, "tansu lost a port race; retrying");
                    attempt += 1;
                    port = free_port();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_broker(&self, bin: &Path, cwd: &Path, port: u16, log: &Path) -> Result<ServerProcess> {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(bin);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(self.storage.engine_url())
            .current_dir(cwd);
        for var in TANSU_ENV {
            command.env_remove(var);
        }
        let mut process = ServerProcess::spawn(ServerSpec {
            name: format!("tansu on 127.0.0.1:{port}"),
            command,
            log,
            // tansu shuts down on SIGTERM and SIGINT alike.
            stop_signal: Signal::TERM,
            cleanup_dir: None,
        })?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        process.wait_ready(addr, self.startup_timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                && answers_metadata(addr).is_ok()
        })?;
        Ok(process)
    }
}

/// A running tansu broker on 127.0.0.1. Dropping it stops the broker (SIGTERM, then
/// SIGKILL after a grace period); sqlite data stays in its directory.
#[derive(Debug)]
pub struct Broker {
    process: Option<ServerProcess>,
    port: u16,
    storage: Storage,
}

impl Broker {
    /// Options for a broker with `storage`.
    pub fn builder(storage: Storage) -> BrokerBuilder {
        BrokerBuilder {
            storage,
            port: None,
            log_dir: None,
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// A broker on a free port.
    pub fn start(storage: Storage) -> Result<Broker> {
        Broker::builder(storage).start()
    }

    /// A broker on `port`; fails if the port is taken.
    pub fn start_on(storage: Storage, port: u16) -> Result<Broker> {
        Broker::builder(storage).port(port).start()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the broker keeps its data.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The broker's log file (None once stopped).
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(ServerProcess::log)
    }

    /// A client config with `bootstrap.servers` set, to add settings to and `create()`.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Creates `topic` with `partitions` partitions (replication 1) through the Kafka
    /// admin API, and fails if it exists.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let bootstrap = self.bootstrap();
        let kafka_error = |message: String| Error::Kafka {
            bootstrap: bootstrap.clone(),
            action: format!("create topic {topic} ({partitions} partitions)"),
            message,
        };
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| kafka_error(e.to_string()))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &options,
            )
            .await
            .map_err(|e| kafka_error(e.to_string()))?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(kafka_error(code.to_string()));
            }
        }
        Ok(())
    }

    /// Creates a topic named [`unique_name`]`(prefix)` and returns its name; each test
    /// takes its own so tests never share state.
    pub async fn create_unique_topic(&self, prefix: &str, partitions: i32) -> Result<String> {
        let topic = unique_name(prefix);
        self.create_topic(&topic, partitions).await?;
        Ok(topic)
    }

    /// Stops the broker (SIGTERM, then SIGKILL after a grace period) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(STOP_GRACE)?;
        }
        Ok(())
    }
}

/// One metadata round trip; the broker must advertise the address we dialled.
fn answers_metadata(addr: SocketAddr) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("socket.connection.setup.timeout.ms", "2000")
        .create()
        .map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let advertised = metadata
        .brokers()
        .iter()
        .any(|b| b.port() == i32::from(addr.port()));
    if advertised {
        Ok(())
    } else {
        Err(format!("metadata from {addr} does not advertise it"))
    }
}

fn tansu_bin() -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(bin) = std::env::var_os(TANSU_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        // An explicit choice that is wrong must not silently fall back to another binary.
        return Err(Error::BinaryNotFound {
            what: "tansu",
            tried: format!("{TANSU_BIN_ENV}={}", bin.display()),
            hint: INSTALL_HINT,
        });
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let candidates = cargo_home.map(|home| home.join("bin")).into_iter().chain(
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    for dir in candidates {
        let bin = dir.join("tansu");
        if bin.is_file() {
            return Ok(bin);
        }
        tried.push(bin.display().to_string());
    }
    Err(Error::BinaryNotFound {
        what: "tansu",
        tried: format!("{TANSU_BIN_ENV} unset; {}", tried.join(", ")),
        hint: INSTALL_HINT,
    })
}
