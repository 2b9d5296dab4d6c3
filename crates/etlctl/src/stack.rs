//! The local stack on disk: where everything lives under `.etl/`, what the stack is made
//! of ([`StackPlan`], computed the same way by `up` and the supervisor), and the
//! `stack.json` the supervisor writes so every other command can find the endpoints.
//!
//! ```text
//! .etl/
//!   supervisor.pid   pid of `etlctl supervise` (written first, removed last)
//!   api-token        the control-plane token (0600), made once by the first
//!                    `etlctl supervise`; every service and etlctl use it
//!   stack.json       endpoints, log paths, service pids and restarts (while up)
//!   logs/            supervisor.log, postgres-<port>.log, tansu-<port>.log, <service>.log
//!   pg/              the Postgres cluster (data survives `down`)
//!   kafka/           Apache Kafka's log (the default --kafka-storage kafka)
//!   tansu/           broker data with --kafka-storage sqlite
//!   sftp/            the sftp-gateway's user roots and host key
//!   connect/         connect-manager's connector registry
//!   input/           generated demo input
//!   report.json      the last demo's report
//! ```

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The database the stack creates and the sink writes to.
pub const DATABASE: &str = "nlp_db";
/// The SFTP account the stack's gateway serves and the extractor uploads with.
pub const SFTP_USER: &str = "etl";
/// Its password: a local, loopback-only development stack.
pub const SFTP_PASSWORD: &str = "etl";

/// The paths of one stack directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackDir {
    root: PathBuf,
}

impl StackDir {
    /// `dir` made absolute against the current directory (children run elsewhere, and
    /// paths in `stack.json` and StartRun must not depend on anyone's cwd).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let root = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(StackDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn stack_json(&self) -> PathBuf {
        self.root.join("stack.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.log("supervisor")
    }
    pub fn pg(&self) -> PathBuf {
        self.root.join("pg")
    }
    pub fn kafka(&self) -> PathBuf {
        self.root.join("kafka")
    }
    pub fn tansu(&self) -> PathBuf {
        self.root.join("tansu")
    }
    pub fn input(&self) -> PathBuf {
        self.root.join("input")
    }
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }
    /// The control-plane token every service of this stack requires.
    pub fn api_token_file(&self) -> PathBuf {
        self.root.join("api-token")
    }

    /// Makes the stack's API token once: 32 random bytes, hex, in a file only
    /// its owner reads (0600). An existing token is kept, so clients that read
    /// it keep working across `down`/`up`.
    pub fn ensure_api_token(&self) -> std::io::Result<()> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.api_token_file();
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root)?;
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()?;
        }
        // A concurrent first start may have made one meanwhile: keep that one.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::remove_file(&tmp)
    }

    /// The stack's API token, if `up` made one.
    pub fn read_api_token(&self) -> anyhow::Result<Option<etl_service::auth::Token>> {
        let path = self.api_token_file();
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(etl_service::auth::Token::from_file(&path)?))
    }
    /// The data directory of a service (`ETL_DATA_DIR`).
    pub fn service_data(&self, service: Service) -> PathBuf {
        self.root.join(service.data_dir_name())
    }

    /// Reads `stack.json`; `Ok(None)` when there is none.
    pub fn read_stack(&self) -> anyhow::Result<Option<StackInfo>> {
        let path = self.stack_json();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(StackInfo::from_json(&text).map_err(|e| {
                anyhow::anyhow!("{} is not a stack file: {e}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes `stack.json` atomically (temp file + rename): `up` and `status` poll it
    /// and must never read half of it.
    pub fn write_stack(&self, info: &StackInfo) -> std::io::Result<()> {
        write_atomically(&self.stack_json(), info.to_json().as_bytes())
    }

    /// The supervisor pid from `supervisor.pid`, if the file exists and parses.
    pub fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn write_pid(&self, pid: u32) -> std::io::Result<()> {
        write_atomically(&self.pid_file(), format!("{pid}\n").as_bytes())
    }

    /// Removes `stack.json` and `supervisor.pid` (missing files are fine).
    pub fn remove_runtime_files(&self) {
        let _ = std::fs::remove_file(self.stack_json());
        let _ = std::fs::remove_file(self.pid_file());
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The four services the supervisor runs, in the order they are started and listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    SinkVerifier,
    SftpGateway,
    ConnectManager,
    Extractor,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::SinkVerifier,
        Service::SftpGateway,
        Service::ConnectManager,
        Service::Extractor,
    ];

    /// The binary name, which is also the log file name and `OTEL_SERVICE_NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Extractor => "extractor",
            Service::SftpGateway => "sftp-gateway",
            Service::ConnectManager => "connect-manager",
            Service::SinkVerifier => "sink-verifier",
        }
    }

    /// The gRPC port's offset from `--base-port` (50051..50054 by default).
    pub fn port_offset(self) -> u16 {
        match self {
            Service::Extractor => 0,
            Service::SftpGateway => 1,
            Service::ConnectManager => 2,
            Service::SinkVerifier => 3,
        }
    }

    fn data_dir_name(self) -> &'static str {
        match self {
            Service::Extractor => "extractor",
            Service::SftpGateway => "sftp",
            Service::ConnectManager => "connect",
            Service::SinkVerifier => "verifier",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which broker runs, and where it keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KafkaStorage {
    /// Apache Kafka (KRaft, one node) with its log in `.etl/kafka`: durable across
    /// `down`/`up` and broker crashes, and what compose runs. The default.
    Kafka,
    /// tansu in memory: no JVM, topics gone after `down`, and a consumer that
    /// resumes inside a producer batch misses its rest: benchmarks only.
    Memory,
    /// tansu with sqlite in `.etl/tansu`: durable, far slower to consume.
    Sqlite,
}

impl FromStr for KafkaStorage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kafka" => Ok(KafkaStorage::Kafka),
            "memory" => Ok(KafkaStorage::Memory),
            "sqlite" => Ok(KafkaStorage::Sqlite),
            other => Err(format!(
                "unknown kafka storage {other:?} (kafka, memory or sqlite)"
            )),
        }
    }
}

impl fmt::Display for KafkaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KafkaStorage::Kafka => "kafka",
            KafkaStorage::Memory => "memory",
            KafkaStorage::Sqlite => "sqlite",
        })
    }
}

/// Ports of the stack; every one is a flag of `up` so stacks can run side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub postgres: u16,
    pub kafka: u16,
    pub sftp: u16,
    /// extractor = base, sftp-gateway = base+1, connect-manager = base+2,
    /// sink-verifier = base+3.
    pub grpc_base: u16,
    pub rest: u16,
    /// The embedded collector's OTLP/gRPC receiver.
    pub otlp: u16,
    /// The embedded collector's Jaeger UI and query API.
    pub jaeger: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            postgres: 5432,
            kafka: 9092,
            sftp: 2222,
            grpc_base: 50051,
            rest: 8083,
            otlp: 4317,
            jaeger: 16686,
        }
    }
}

impl Ports {
    pub fn grpc(&self, service: Service) -> u16 {
        self.grpc_base + service.port_offset()
    }

    /// Postgres and Kafka, with the flag that sets each, for "port busy" messages.
    pub fn infra(&self) -> Vec<(String, u16, &'static str)> {
        vec![
            ("postgres".to_owned(), self.postgres, "--pg-port"),
            ("kafka".to_owned(), self.kafka, "--kafka-port"),
        ]
    }

    /// The embedded collector's two listeners.
    pub fn collector(&self) -> Vec<(String, u16, &'static str)> {
        vec![
            (
                "trace collector (OTLP)".to_owned(),
                self.otlp,
                "--otlp-port",
            ),
            ("Jaeger UI".to_owned(), self.jaeger, "--jaeger-port"),
        ]
    }

    /// The four services' listeners.
    pub fn services(&self) -> Vec<(String, u16, &'static str)> {
        let mut ports = vec![("sftp-gateway (SFTP)".to_owned(), self.sftp, "--sftp-port")];
        for service in Service::ALL {
            ports.push((
                format!("{service} (gRPC)"),
                self.grpc(service),
                "--base-port",
            ));
        }
        ports.push((
            "connect-manager (REST)".to_owned(),
            self.rest,
            "--rest-port",
        ));
        ports
    }
}

/// Everything that decides what the stack looks like: the same plan gives the same
/// endpoints in `up` (which polls them) and in the supervisor (which starts them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackPlan {
    pub dir: StackDir,
    pub ports: Ports,
    pub kafka_storage: KafkaStorage,
    pub topic: String,
    pub partitions: i32,
    pub with_services: bool,
    /// Where the service binaries are (`--bin-dir`, default: next to etlctl).
    pub bin_dir: PathBuf,
    /// Where the services' spans go.
    pub tracing: Tracing,
}

/// Where the services' spans go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracing {
    /// The supervisor runs the embedded OTLP collector with the Jaeger UI
    /// (`--otlp-port`, `--jaeger-port`), and every service exports to it.
    Embedded,
    /// The services export to this OTLP endpoint (the caller's
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. compose's Jaeger); no embedded collector.
    Endpoint(String),
    /// `--no-tracing`: no collector, no `OTEL_*` variables for the services.
    Off,
}

impl StackPlan {
    pub fn postgres_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{DATABASE}",
            self.ports.postgres
        )
    }
    pub fn kafka_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.kafka)
    }
    pub fn sftp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.sftp)
    }
    pub fn grpc_addr(&self, service: Service) -> String {
        format!("127.0.0.1:{}", self.ports.grpc(service))
    }
    pub fn grpc_url(&self, service: Service) -> String {
        format!("http://{}", self.grpc_addr(service))
    }
    pub fn rest_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.rest)
    }
    /// The embedded collector's OTLP endpoint, or the external one the services use.
    pub fn otlp_endpoint(&self) -> Option<String> {
        match &self.tracing {
            Tracing::Embedded => Some(format!("http://127.0.0.1:{}", self.ports.otlp)),
            Tracing::Endpoint(endpoint) => Some(endpoint.clone()),
            Tracing::Off => None,
        }
    }
    /// The Jaeger UI (and query API) of the embedded collector.
    pub fn jaeger_url(&self) -> Option<String> {
        (self.tracing == Tracing::Embedded)
            .then(|| format!("http://127.0.0.1:{}", self.ports.jaeger))
    }
    /// Every port the stack listens on, with the flag that sets it: the ones `up`
    /// checks before starting anything.
    pub fn listen_ports(&self) -> Vec<(String, u16, &'static str)> {
        let mut ports = self.ports.infra();
        if self.tracing == Tracing::Embedded {
            ports.extend(self.ports.collector());
        }
        if self.with_services {
            ports.extend(self.ports.services());
        }
        ports
    }
    pub fn binary(&self, service: Service) -> PathBuf {
        self.bin_dir.join(service.name())
    }
    /// Services whose binary is not in `bin_dir`.
    pub fn missing_binaries(&self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|s| !self.binary(*s).is_file())
            .collect()
    }

    /// The environment of one service: its listeners, its peers and its data
    /// directory, named after the flags' env twins (see docs/ARCHITECTURE.md),
    /// and the stack's API token file (a token inherited from the caller's
    /// environment is blanked: the stack's own wins).
    pub fn service_env(&self, service: Service) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "ETL_API_TOKEN_FILE",
                self.dir.api_token_file().display().to_string(),
            ),
            ("ETL_API_TOKEN", String::new()),
            ("ETL_GRPC_ADDR", self.grpc_addr(service)),
            ("ETL_SFTP_ADDR", self.sftp_addr()),
            ("ETL_SFTP_USER", SFTP_USER.to_owned()),
            ("ETL_SFTP_PASSWORD", SFTP_PASSWORD.to_owned()),
            ("ETL_KAFKA_BROKERS", self.kafka_bootstrap()),
            ("ETL_DATABASE_URL", self.postgres_url()),
            ("ETL_VERIFIER_URL", self.grpc_url(Service::SinkVerifier)),
            ("ETL_GATEWAY_URL", self.grpc_url(Service::SftpGateway)),
            ("ETL_TOPIC", self.topic.clone()),
            (
                "ETL_DATA_DIR",
                self.dir.service_data(service).display().to_string(),
            ),
            ("LOG_FORMAT", "json".to_owned()),
        ];
        if let Some(endpoint) = self.otlp_endpoint() {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
            env.push(("OTEL_SERVICE_NAME", service.name().to_owned()));
            // Spans are exported in batches; the SDK's default 5 s delay would keep a
            // file's trace out of Jaeger for that long after its rows committed.
            if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
                env.push(("OTEL_BSP_SCHEDULE_DELAY", "1000".to_owned()));
            }
            // The embedded collector keys Jaeger's "processes" by service.instance.id:
            // without one, every service is "unknown" and all spans of a trace show
            // the same service name. One instance per service and stack port.
            let instance = format!(
                "service.instance.id={}-{}",
                service.name(),
                self.ports.grpc(service)
            );
            let attributes = match std::env::var("OTEL_RESOURCE_ATTRIBUTES") {
                Ok(theirs) if !theirs.trim().is_empty() => format!("{theirs},{instance}"),
                _ => instance,
            };
            env.push(("OTEL_RESOURCE_ATTRIBUTES", attributes));
        }
        if service == Service::ConnectManager {
            env.push(("ETL_REST_ADDR", self.rest_addr()));
        }
        if service == Service::Extractor {
            // StartRun reads the demo's input, and nothing else on the host.
            env.push(("ETL_INPUT_DIRS", self.dir.input().display().to_string()));
        }
        env
    }

    /// The `stack.json` of this plan before anything runs: endpoints and log paths,
    /// services `starting` (or `missing`/`disabled`).
    pub fn stack_info(&self, supervisor_pid: u32, started_at_unix_ms: u64) -> StackInfo {
        let logs = self.dir.logs();
        let services = Service::ALL
            .into_iter()
            .map(|service| {
                let binary = self.binary(service);
                let state = if !self.with_services {
                    ServiceState::Disabled
                } else if binary.is_file() {
                    ServiceState::Starting
                } else {
                    ServiceState::Missing
                };
                ServiceInfo {
                    name: service,
                    grpc_url: self.grpc_url(service),
                    binary,
                    log: self.dir.log(service.name()),
                    state,
                    pid: None,
                    restarts: 0,
                    last_exit: None,
                }
            })
            .collect();
        StackInfo {
            supervisor_pid,
            started_at_unix_ms,
            dir: self.dir.root().to_path_buf(),
            supervisor_log: self.dir.supervisor_log(),
            postgres: PostgresInfo {
                url: self.postgres_url(),
                port: self.ports.postgres,
                data_dir: self.dir.pg(),
                log: logs.join(format!("postgres-{}.log", self.ports.postgres)),
                process: ProcessInfo::default(),
            },
            kafka: KafkaInfo {
                bootstrap: self.kafka_bootstrap(),
                port: self.ports.kafka,
                storage: self.kafka_storage,
                topic: self.topic.clone(),
                log: logs.join(format!(
                    "{}-{}.log",
                    match self.kafka_storage {
                        KafkaStorage::Kafka => "kafka",
                        _ => "tansu",
                    },
                    self.ports.kafka
                )),
                process: ProcessInfo::default(),
            },
            sftp_addr: self.sftp_addr(),
            rest_url: format!("http://{}", self.rest_addr()),
            tracing: TracingInfo {
                collector: match self.tracing {
                    Tracing::Embedded => CollectorKind::Embedded,
                    Tracing::Endpoint(_) => CollectorKind::External,
                    Tracing::Off => CollectorKind::Off,
                },
                otlp_endpoint: self.otlp_endpoint(),
                jaeger_url: self.jaeger_url(),
                log: self.dir.supervisor_log(),
            },
            services,
        }
    }
}

/// `stack.json`: what is running and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    pub supervisor_pid: u32,
    pub started_at_unix_ms: u64,
    pub dir: PathBuf,
    pub supervisor_log: PathBuf,
    pub postgres: PostgresInfo,
    pub kafka: KafkaInfo,
    /// The sftp-gateway's SFTP listener.
    pub sftp_addr: String,
    /// connect-manager's Kafka-Connect-compatible REST API.
    pub rest_url: String,
    /// Where the services' spans go and where to read them.
    #[serde(default)]
    pub tracing: TracingInfo,
    pub services: Vec<ServiceInfo>,
}

/// The tracing part of `stack.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracingInfo {
    pub collector: CollectorKind,
    /// What the services get as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// The Jaeger UI and query API (`etlctl trace` reads it); only known for the
    /// embedded collector.
    pub jaeger_url: Option<String>,
    /// The embedded collector logs into the supervisor's log.
    pub log: PathBuf,
}

/// Which collector receives the services' spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorKind {
    /// In the supervisor (`etl_telemetry::collector`).
    Embedded,
    /// The caller's `OTEL_EXPORTER_OTLP_ENDPOINT`.
    External,
    /// `--no-tracing`.
    #[default]
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresInfo {
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The postmaster as the supervisor runs it.
    #[serde(default)]
    pub process: ProcessInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaInfo {
    pub bootstrap: String,
    pub port: u16,
    pub storage: KafkaStorage,
    pub topic: String,
    pub log: PathBuf,
    /// The broker process as the supervisor runs it.
    #[serde(default)]
    pub process: ProcessInfo,
}

/// A supervised server process (Postgres, the broker): its pid, restarts and last exit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: Option<u32>,
    /// Restarts after it died on its own.
    pub restarts: u32,
    /// How it last ended, e.g. `died (exit status: 1) after 12s`.
    pub last_exit: Option<String>,
    /// The supervisor gave up restarting it (it kept dying).
    #[serde(default)]
    pub failed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: Service,
    pub grpc_url: String,
    pub binary: PathBuf,
    pub log: PathBuf,
    pub state: ServiceState,
    /// The running process, if any.
    pub pid: Option<u32>,
    /// How many times the supervisor restarted it after it exited on its own.
    pub restarts: u32,
    /// How it last exited, e.g. `signal: 9 (SIGKILL) after 14s`.
    #[serde(default)]
    pub last_exit: Option<String>,
}

/// What the supervisor knows about a service process (its health is `status`'s job).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Not started: `--without-services`.
    Disabled,
    /// Its binary is not in the bin dir; the supervisor looks again with backoff.
    Missing,
    Starting,
    Running,
    /// Exited on its own; restarting after a backoff.
    Restarting,
    /// Kept dying right after each start: no longer restarted (see its log).
    Failed,
    Stopped,
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceState::Disabled => "disabled",
            ServiceState::Missing => "missing binary",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Restarting => "restarting",
            ServiceState::Failed => "failed (kept dying; not restarted)",
            ServiceState::Stopped => "stopped",
        })
    }
}

impl StackInfo {
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and paths always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    pub fn service(&self, service: Service) -> Option<&ServiceInfo> {
        self.services.iter().find(|s| s.name == service)
    }

    pub fn service_mut(&mut self, service: Service) -> Option<&mut ServiceInfo> {
        self.services.iter_mut().find(|s| s.name == service)
    }

    /// The gRPC URL of `service` in this stack.
    pub fn grpc_url(&self, service: Service) -> Option<&str> {
        self.service(service).map(|s| s.grpc_url.as_str())
    }

    /// The stack's value for a connector file placeholder (`${ETL_PG_PORT:-5432}`…).
    /// The environment is consulted before this; see [`crate::connectors::lookup`].
    pub fn placeholder(&self, name: &str) -> Option<String> {
        let (sftp_host, sftp_port) = self
            .sftp_addr
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .unzip();
        match name {
            "ETL_SFTP_HOST" => sftp_host,
            "ETL_SFTP_PORT" => sftp_port,
            "ETL_SFTP_USER" => Some(SFTP_USER.to_owned()),
            "ETL_SFTP_PASSWORD" => Some(SFTP_PASSWORD.to_owned()),
            "ETL_GATEWAY_URL" => self.grpc_url(Service::SftpGateway).map(str::to_owned),
            "ETL_VERIFIER_URL" => self.grpc_url(Service::SinkVerifier).map(str::to_owned),
            "ETL_TOPIC" => Some(self.kafka.topic.clone()),
            "ETL_KAFKA_BROKERS" => Some(self.kafka.bootstrap.clone()),
            "ETL_PG_HOST" => Some("127.0.0.1".to_owned()),
            "ETL_PG_PORT" => Some(self.postgres.port.to_string()),
            "ETL_PG_DATABASE" => Some(DATABASE.to_owned()),
            "ETL_PG_USER" => Some("postgres".to_owned()),
            "ETL_DATABASE_URL" => Some(self.postgres.url.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn plan(root: &str) -> StackPlan {
        StackPlan {
            dir: StackDir {
                root: PathBuf::from(root),
            },
            ports: Ports::default(),
            kafka_storage: KafkaStorage::Memory,
            topic: "review-etl".to_owned(),
            partitions: 3,
            with_services: true,
            bin_dir: PathBuf::from("/nonexistent/bin"),
            tracing: Tracing::Embedded,
        }
    }

    #[test]
    fn stack_json_round_trips() {
        let mut info = plan("/work/.etl").stack_info(4242, 1_700_000_000_000);
        if let Some(s) = info.service_mut(Service::SftpGateway) {
            s.state = ServiceState::Running;
            s.pid = Some(77);
            s.restarts = 2;
        }
        let json = info.to_json();
        let back = StackInfo::from_json(&json).expect("parses");
        assert_eq!(back, info);

        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["supervisor_pid"], 4242);
        assert_eq!(
            value["postgres"]["url"],
            "postgres://postgres@127.0.0.1:5432/nlp_db"
        );
        assert_eq!(value["kafka"]["bootstrap"], "127.0.0.1:9092");
        assert_eq!(value["kafka"]["storage"], "memory");
        assert_eq!(value["sftp_addr"], "127.0.0.1:2222");
        assert_eq!(value["rest_url"], "http://127.0.0.1:8083");
        assert_eq!(value["services"][1]["name"], "sftp-gateway");
        assert_eq!(value["services"][1]["grpc_url"], "http://127.0.0.1:50052");
        assert_eq!(value["services"][1]["state"], "running");
        assert_eq!(
            value["postgres"]["log"],
            "/work/.etl/logs/postgres-5432.log"
        );
    }

    #[test]
    fn stack_file_is_written_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::new(tmp.path()).expect("dir");
        assert!(dir.read_stack().expect("read").is_none());
        let info = plan(tmp.path().to_str().expect("utf8")).stack_info(1, 2);
        dir.write_stack(&info).expect("write");
        assert_eq!(dir.read_stack().expect("read"), Some(info));
        dir.write_pid(99).expect("pid");
        assert_eq!(dir.read_pid(), Some(99));
        dir.remove_runtime_files();
        assert!(dir.read_stack().expect("read").is_none());
        assert_eq!(dir.read_pid(), None);
    }

    #[test]
    fn ports_follow_the_base_port() {
        let mut p = plan("/x");
        p.ports.grpc_base = 40000;
        assert_eq!(p.grpc_url(Service::Extractor), "http://127.0.0.1:40000");
        assert_eq!(p.grpc_url(Service::SinkVerifier), "http://127.0.0.1:40003");
        let env = p.service_env(Service::ConnectManager);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ETL_GRPC_ADDR").as_deref(), Some("127.0.0.1:40002"));
        assert_eq!(get("ETL_REST_ADDR").as_deref(), Some("127.0.0.1:8083"));
        assert_eq!(get("ETL_DATA_DIR").as_deref(), Some("/x/connect"));
        assert!(env.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317".to_owned()
        )));
        assert!(env.contains(&("OTEL_SERVICE_NAME", "connect-manager".to_owned())));
        assert!(
            get("OTEL_RESOURCE_ATTRIBUTES")
                .is_some_and(|a| a.ends_with("service.instance.id=connect-manager-40002")),
            "{env:?}"
        );
        p.tracing = Tracing::Off;
        let off = p.service_env(Service::ConnectManager);
        assert!(!off.iter().any(|(k, _)| k.starts_with("OTEL_")), "{off:?}");
        p.tracing = Tracing::Endpoint("http://jaeger:4317".to_owned());
        assert!(p.service_env(Service::Extractor).contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://jaeger:4317".to_owned()
        )));
        assert_eq!(p.jaeger_url(), None);
        let gw = p.service_env(Service::SftpGateway);
        assert!(gw.contains(&("ETL_DATA_DIR", "/x/sftp".to_owned())));
        assert!(!gw.iter().any(|(k, _)| *k == "ETL_REST_ADDR"));
        for service in Service::ALL {
            let env = p.service_env(service);
            assert!(
                env.contains(&("ETL_API_TOKEN_FILE", "/x/api-token".to_owned())),
                "{service}: {env:?}"
            );
        }
        assert!(
            p.service_env(Service::Extractor)
                .contains(&("ETL_INPUT_DIRS", "/x/input".to_owned()))
        );
    }

    #[test]
    fn the_api_token_is_made_once_and_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::new(&tmp.path().join("stack")).expect("dir");
        assert!(dir.read_api_token().expect("read").is_none());
        dir.ensure_api_token().expect("make");
        let first = dir.read_api_token().expect("read").expect("token");
        assert_eq!(first.expose().len(), 64);
        let mode = std::fs::metadata(dir.api_token_file())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        dir.ensure_api_token().expect("again");
        assert_eq!(dir.read_api_token().expect("read"), Some(first));
    }

    #[test]
    fn missing_binaries_are_reported() {
        let info = plan("/x").stack_info(1, 2);
        assert!(
            info.services
                .iter()
                .all(|s| s.state == ServiceState::Missing)
        );
        let mut p = plan("/x");
        p.with_services = false;
        let info = p.stack_info(1, 2);
        assert!(
            info.services
                .iter()
                .all(|s| s.state == ServiceState::Disabled)
        );
    }
}
