//! A Kafka broker for tests and the local stack: Apache Kafka itself (KRaft, one node,
//! durable, the default) or tansu (Kafka's wire protocol in one Rust binary, no JVM).
//!
//! **Apache Kafka** ([`Storage::Kafka`]) runs from the jars that `make kafka` fetches from
//! Maven Central (see `tools/kafka/pom.xml`) as
//! ```text
//! java -cp 'LIBS/*' kafka.Kafka DIR/server.properties      (after kafka-storage format, once)
//! ```
//! with its log segments in `DIR/log`. It is what compose runs, keeps every acknowledged
//! record across a kill -9 of the broker (the page cache holds what was written), and
//! serves a fetch from any offset, including one inside a producer batch.
//!
//! **tansu** is started as
//! ```text
//! tansu broker --listener-url tcp://127.0.0.1:PORT \
//!              --advertised-listener-url tcp://127.0.0.1:PORT \
//!              --storage-engine memory://tansu/        (or sqlite://tansu.db, cwd = data dir)
//! ```
//! with tansu's own environment twins (`STORAGE_ENGINE`, `LISTENER_URL`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, …) removed, so a test's environment cannot redirect it.
//! tansu resolves `sqlite://PATH` against its working directory (an absolute path gets
//! doubled), hence the relative `tansu.db` and cwd = the data directory.
//!
//! Why memory is for benchmarks only: tansu 0.6's memory engine answers a fetch from
//! offset N with the batches whose *base* offset is at least N (`split_off` in its
//! dynostore fetch), so a consumer that resumes from a committed offset inside a producer
//! batch never sees the rest of that batch. That is how a restarted sink lost the tail of
//! the file in flight; `tests/it/broker.rs` keeps the case.

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
use crate::process::{STOP_GRACE, ServerProcess, ServerSpec, run_logged};

/// Environment variable naming the tansu binary.
pub const TANSU_BIN_ENV: &str = "TANSU_BIN";
/// Environment variable naming the directory of Apache Kafka's jars.
pub const KAFKA_LIBS_ENV: &str = "KAFKA_LIBS";
/// The Apache Kafka release `make kafka` fetches (keep in step with the Makefile).
pub const KAFKA_VERSION: &str = "4.1.1";

const KAFKA_INSTALL_HINT: &str = "run `make kafka` (fetches Apache Kafka's jars from Maven \
                                  Central with mvn, about 20 seconds), or set KAFKA_LIBS to \
                                  a directory holding them";

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

/// Which broker, and where it keeps its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Apache Kafka (KRaft) with its log in this directory (formatted on first start):
    /// durable, and correct for consumers that resume anywhere. The default.
    Kafka(PathBuf),
    /// tansu, `memory://tansu/`: no JVM, gone when it stops, and loses the rest of a
    /// producer batch for a consumer resuming inside it (see the module doc). Benchmarks.
    Memory,
    /// tansu, `sqlite://tansu.db` in this directory (created if missing): records and
    /// committed offsets survive a restart. Far slower to consume than memory.
    Sqlite(PathBuf),
}

impl Storage {
    fn engine_url(&self) -> &'static str {
        match self {
            Storage::Memory => "memory://tansu/",
            Storage::Sqlite(_) | Storage::Kafka(_) => "sqlite://tansu.db",
        }
    }

    fn server(&self) -> &'static str {
        match self {
            Storage::Kafka(_) => "kafka",
            Storage::Memory | Storage::Sqlite(_) => "tansu",
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
    remove_dir: bool,
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

    /// Remove the data directory once the broker is gone, even if our process dies first
    /// (a throwaway broker whose directory nobody else cleans up).
    pub fn remove_dir_on_exit(mut self) -> Self {
        self.remove_dir = true;
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
        let bin = match &self.storage {
            Storage::Kafka(_) => java_bin()?,
            _ => tansu_bin()?,
        };
        let cwd = match &self.storage {
            Storage::Sqlite(dir) | Storage::Kafka(dir) => {
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
            let server = self.storage.server();
            let log = match (&self.log_dir, &self.storage) {
                (Some(dir), _) => dir.join(format!("{server}-{port}.log")),
                (None, Storage::Sqlite(_) | Storage::Kafka(_)) => cwd.join(format!("{server}.log")),
                (None, Storage::Memory) => cwd.join(format!("{server}-{port}.log")),
            };
            let started = match &self.storage {
                Storage::Kafka(_) => self.start_kafka(&bin, &cwd, port, &log),
                _ => self.start_broker(&bin, &cwd, port, &log),
            };
            match started {
                Ok(process) => {
                    tracing::info!(port, storage = ?self.storage, log = %log.display(), "{server} started");
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
                    tracing::debug!(port, "{server} lost a port race; retrying");
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
        warm_group_coordinator(addr);
        Ok(process)
    }
}

/// A fresh Kafka creates its `__consumer_offsets` topic when a group first looks for
/// its coordinator, which takes seconds; a sink joining its group would pay them on
/// the first file. Asking for a group's committed offsets once here pays them at
/// start instead. Best effort: a failure only means the first group pays.
fn warm_group_coordinator(addr: SocketAddr) {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "etl-stack-warm-up")
        .create();
    let Ok(consumer) = consumer else { return };
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("__etl_stack_warm_up", 0);
    if let Err(e) = consumer.committed_offsets(tpl, Duration::from_secs(30)) {
        tracing::debug!(%addr, error = %e, "group coordinator warm-up failed");
    }
}

impl BrokerBuilder {
    /// Formats `dir` for KRaft on first use, writes the broker's config and starts it.
    /// The controller listens on a second free port; only the broker port is advertised.
    fn start_kafka(&self, java: &Path, dir: &Path, port: u16, log: &Path) -> Result<ServerProcess> {
        let libs = kafka_libs()?;
        let classpath = format!("{}/*", libs.display());
        let controller_port = free_port();
        let log_dirs = dir.join("log");
        let properties = dir.join("server.properties");
        write_file(
            &properties,
            &kafka_properties(port, controller_port, &log_dirs),
        )?;
        let log4j = dir.join("log4j2.yaml");
        write_file(&log4j, KAFKA_LOG4J)?;
        let java_command = |main: &str, jvm_options: &[String]| {
            let mut command = Command::new(java);
            command
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .args(KAFKA_JVM_OPTIONS)
                .args(jvm_options)
                .arg("-cp")
                .arg(&classpath)
                .arg(main)
                .current_dir(dir);
            // The broker must read its settings from server.properties only.
            for var in ["KAFKA_OPTS", "KAFKA_HEAP_OPTS", "JAVA_TOOL_OPTIONS"] {
                command.env_remove(var);
            }
            command
        };
        if !log_dirs.join("meta.properties").is_file() {
            let mut format = java_command("kafka.tools.StorageTool", &[]);
            format
                .arg("format")
                .arg("--cluster-id")
                .arg(kafka_cluster_id())
                .arg("--config")
                .arg(&properties);
            run_logged(format, log)?;
        }
        // Class-data sharing: the first run of a broker directory records the
        // classes it loaded when it stops; later starts map them instead of
        // loading and verifying thousands of classes from the jars (startup is
        // what `etlctl up` waits for). A stale or unusable archive only makes
        // the JVM warn and load classes as usual.
        // Only for a directory that is kept (etlctl's stack): a throwaway
        // broker would pay for writing an archive no one reads.
        let archive = dir.join("kafka-classes.jsa");
        let sharing: Vec<String> = if self.remove_dir {
            Vec::new()
        } else if archive.is_file() {
            vec![format!("-XX:SharedArchiveFile={}", archive.display())]
        } else {
            vec![format!("-XX:ArchiveClassesAtExit={}", archive.display())]
        };
        let mut command = java_command("kafka.Kafka", &sharing);
        command.arg(&properties);
        let mut process = ServerProcess::spawn(ServerSpec {
            name: format!("kafka on 127.0.0.1:{port}"),
            command,
            log,
            // SIGTERM runs Kafka's controlled shutdown (flushes and closes the log).
            stop_signal: Signal::TERM,
            cleanup_dir: self.remove_dir.then_some(dir),
        })?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        process.wait_ready(addr, self.startup_timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                && answers_metadata(addr).is_ok()
        })?;
        warm_group_coordinator(addr);
        Ok(process)
    }
}

/// JVM settings: a small fixed heap (the broker needs little for one node), the
/// serial collector, and the client compiler only (`TieredStopAtLevel=1`). The
/// server compiler spent 6.3 CPU seconds compiling in the broker's first minute
/// (`-XX:+CITime`), on a 2-core machine the pipeline shares: a 100k-row burst
/// cost the broker 2.8 CPU s with it and 1.8 s without, and the local broker's
/// runs are short. G1 (with `MaxGCPauseMillis=20`) cost the broker 0.86–1.53
/// CPU s per 100k-row burst in five runs, the serial collector 0.76–0.92 s in
/// five (its young collections of a heap this small are short, and it runs no
/// concurrent threads or write barriers). compose's Kafka image keeps the JVM's
/// defaults.
const KAFKA_JVM_OPTIONS: &[&str] = &[
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

/// Warnings and the start/stop lines only: Kafka's INFO output is megabytes per run.
const KAFKA_LOG4J: &str = "Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: \"[%d] %p %m (%c)%n\"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
";

/// One node that is broker and controller, with a static voter set (so the controller
/// port may change from one start to the next); settings a single node needs (replication 1
/// for the internal topics) and those that make a group usable at once (no initial
/// rebalance delay). Segments are flushed by the OS, as in any Kafka deployment: what
/// the broker acknowledged survives the broker process dying.
fn kafka_properties(port: u16, controller_port: u16, log_dirs: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={}
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        log_dirs.display()
    )
}

/// A KRaft cluster id: 16 random bytes, base64url without padding (Kafka's
/// `Uuid`). Never one that starts with `-`: `kafka-storage format` would read
/// it as an option and refuse to format (1 start in 64; Kafka's own
/// `Uuid.randomUuid` draws again for the same reason).
fn kafka_cluster_id() -> String {
    loop {
        let id = encode_cluster_id(uuid::Uuid::new_v4().into_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_cluster_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(char::from(ALPHABET[((bits >> nbits) & 63) as usize]));
        }
    }
    if nbits > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - nbits)) & 63) as usize]));
    }
    out
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

/// `KAFKA_LIBS`, or where `make kafka` puts the jars.
pub fn kafka_libs() -> Result<PathBuf> {
    let dir = match std::env::var_os(KAFKA_LIBS_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(format!(".cache/file-etl/kafka-{KAFKA_VERSION}/libs"))
        }
    };
    let jar = dir.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    if jar.is_file() {
        Ok(dir)
    } else {
        Err(Error::BinaryNotFound {
            what: "Apache Kafka's jars",
            tried: jar.display().to_string(),
            hint: KAFKA_INSTALL_HINT,
        })
    }
}

fn java_bin() -> Result<PathBuf> {
    let from_home = std::env::var_os("JAVA_HOME").map(|h| PathBuf::from(h).join("bin/java"));
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("java"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut tried = Vec::new();
    for bin in from_home.into_iter().chain(on_path) {
        if bin.is_file() {
            return Ok(bin);
        }
        tried.push(bin.display().to_string());
    }
    Err(Error::BinaryNotFound {
        what: "java (17 or newer)",
        tried: tried.join(", "),
        hint: "install a JDK (`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME",
    })
}

/// A running broker (Apache Kafka or tansu) on 127.0.0.1. Dropping it stops the broker (SIGTERM, then
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
            remove_dir: false,
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

    /// The broker's process id, for fault tests that kill it (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// Whether the server process is still alive (false once it exited, for example
    /// after a kill -9, or once stopped). A supervisor polls this to restart it.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.check_running().is_ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_kafka_uuids_that_never_start_with_a_dash() {
        // 0xF8 = 111110|00: the first character is the 63rd of the alphabet, '-'.
        let dash = encode_cluster_id([0xF8; 16]);
        assert!(dash.starts_with('-'), "{dash}");
        assert_eq!(encode_cluster_id([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        for _ in 0..2000 {
            let id = kafka_cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'), "{id}");
        }
    }
}
