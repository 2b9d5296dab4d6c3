//! What the stack is made of: its [`Service`]s and their processes ([`Instance`]s: one
//! per service, or several connect-manager workers), broker, [`Ports`] and tracing,
//! planned once from the flags as a [`StackPlan`], which `up` (to poll the endpoints)
//! and the supervisor (to start them) compute the same way. Each instance's environment
//! is in `env`; `stack.json`, what the plan looks like while it runs, in `info`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::layout::StackDir;

/// The database the stack creates and the sink writes to.
pub const DATABASE: &str = "nlp_db";

/// The most connect-manager workers `--workers` accepts: each is a process with two
/// ports on a machine that also runs everything else.
pub const MAX_WORKERS: u16 = 16;

/// The group id of a distributed connect-manager cluster (Kafka Connect's `group.id`,
/// and connect-manager's own default). Each local stack has a broker of its own, so
/// one name serves every stack.
pub const CONNECT_GROUP_ID: &str = "connect-cluster";

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

    pub(super) fn data_dir_name(self) -> &'static str {
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

/// One process the supervisor runs: a service, and, for the workers of a distributed
/// connect-manager cluster, which worker. Every other service (and a standalone
/// connect-manager) is one process, with no worker number, so a one-worker stack is
/// named, logged and stored exactly as before workers existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    pub service: Service,
    /// `Some(k)`: connect-manager worker k of a distributed cluster (`--workers` > 1).
    pub worker: Option<u16>,
}

impl Instance {
    /// The one process of `service`.
    pub fn single(service: Service) -> Self {
        Instance {
            service,
            worker: None,
        }
    }

    /// Worker `k` of the distributed connect-manager cluster.
    pub fn connect_worker(k: u16) -> Self {
        Instance {
            service: Service::ConnectManager,
            worker: Some(k),
        }
    }

    /// `connect-manager-1` for a worker, else the service's name: the name in
    /// `status`, the log file's name (`logs/<name>.log`) and the supervisor's log lines.
    pub fn name(&self) -> String {
        match self.worker {
            Some(k) => format!("{}-{k}", self.service.name()),
            None => self.service.name().to_owned(),
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which broker runs, and where it keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KafkaStorage {
    /// Apache Kafka (KRaft, one node) with its log in `.etl/kafka`: durable across
    /// `down`/`up` and broker crashes, and what compose runs. The default.
    Kafka,
    /// tansu in memory: no JVM, topics gone after `down` or a broker crash:
    /// benchmarks only (its fetch skips the rest of a producer batch a consumer
    /// resumes inside; the sink's gap guard fetches it again).
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

    /// The gRPC and REST ports of connect-manager worker `k`, `None` past port 65535.
    ///
    /// Worker 0 keeps the standard ports (`--base-port`+2, `--rest-port`), so everything
    /// that talks to "connect-manager" reaches a worker whatever `--workers` says.
    /// Worker k ≥ 1 continues both sequences: gRPC `--base-port`+3+k, just after the
    /// sink-verifier's `--base-port`+3 (50055, 50056, … by default), and REST
    /// `--rest-port`+k (8084, 8085, …). Neither meets another default port of the stack
    /// (5432, 9092, 2222, 4317, 16686) for any `--workers` up to [`MAX_WORKERS`]; moved
    /// ports are checked by [`StackPlan::port_conflicts`].
    pub fn connect_worker(&self, k: u16) -> Option<(u16, u16)> {
        if k == 0 {
            return Some((self.grpc(Service::ConnectManager), self.rest));
        }
        let grpc = self
            .grpc_base
            .checked_add(Service::SinkVerifier.port_offset())?
            .checked_add(k)?;
        Some((grpc, self.rest.checked_add(k)?))
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

    /// The services' listeners, with `workers` connect-manager workers (worker 0's
    /// ports as ever; the others' from [`Ports::connect_worker`], skipped past 65535,
    /// which [`StackArgs::plan`](crate::cli::StackArgs::plan) refuses anyway).
    pub fn services(&self, workers: u16) -> Vec<(String, u16, &'static str)> {
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
        for k in 1..workers {
            if let Some((grpc, rest)) = self.connect_worker(k) {
                let name = Instance::connect_worker(k).name();
                ports.push((format!("{name} (gRPC)"), grpc, "--base-port, --workers"));
                ports.push((format!("{name} (REST)"), rest, "--rest-port, --workers"));
            }
        }
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
    /// connect-manager workers (`--workers`): 1 runs one standalone connect-manager
    /// (connectors in `<dir>/connect`); more run that many in distributed mode, one
    /// cluster sharing connectors and tasks through Kafka.
    pub connect_workers: u16,
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
    /// connect-manager's REST listener: worker 0's.
    pub fn rest_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.rest)
    }
    /// Whether connect-manager runs as a distributed cluster (`--workers` > 1).
    pub fn distributed(&self) -> bool {
        self.connect_workers > 1
    }
    /// Every process the supervisor runs, in start and list order: the services of
    /// [`Service::ALL`], connect-manager as one standalone process or as its workers
    /// 0..N, each worker in its place so that the first connect-manager is worker 0.
    pub fn instances(&self) -> Vec<Instance> {
        let mut out = Vec::new();
        for service in Service::ALL {
            if service == Service::ConnectManager && self.distributed() {
                out.extend((0..self.connect_workers).map(Instance::connect_worker));
            } else {
                out.push(Instance::single(service));
            }
        }
        out
    }
    /// The gRPC port of one process.
    pub fn instance_grpc_port(&self, instance: Instance) -> u16 {
        match instance.worker {
            Some(k) => self.ports.connect_worker(k).map_or(0, |(grpc, _)| grpc),
            None => self.ports.grpc(instance.service),
        }
    }
    pub fn instance_grpc_addr(&self, instance: Instance) -> String {
        format!("127.0.0.1:{}", self.instance_grpc_port(instance))
    }
    pub fn instance_grpc_url(&self, instance: Instance) -> String {
        format!("http://{}", self.instance_grpc_addr(instance))
    }
    /// The REST listener of a connect-manager process; `None` for other services.
    pub fn instance_rest_addr(&self, instance: Instance) -> Option<String> {
        match (instance.service, instance.worker) {
            (Service::ConnectManager, Some(k)) => self
                .ports
                .connect_worker(k)
                .map(|(_, rest)| format!("127.0.0.1:{rest}")),
            (Service::ConnectManager, None) => Some(self.rest_addr()),
            _ => None,
        }
    }
    /// Ports the plan would listen on twice (two of its flags, or a worker's port
    /// meeting another flag's), and worker ports past 65535, each as a sentence that
    /// names the flags: the stack cannot start with any.
    pub fn port_conflicts(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.with_services {
            for k in 1..self.connect_workers {
                if self.ports.connect_worker(k).is_none() {
                    problems.push(format!(
                        "{}: its ports (--base-port + {}, --rest-port + {k}) are past 65535: \
                         lower --base-port or --rest-port, or ask fewer --workers",
                        Instance::connect_worker(k),
                        Service::SinkVerifier.port_offset() + k
                    ));
                }
            }
        }
        let ports = self.listen_ports();
        for (i, (what, port, flag)) in ports.iter().enumerate() {
            if let Some((other, _, other_flag)) = ports[..i].iter().find(|(_, p, _)| p == port) {
                problems.push(format!(
                    "{other} and {what} would both listen on port {port} ({other_flag}; \
                     {flag}): move one"
                ));
            }
        }
        problems
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
            ports.extend(self.ports.services(self.connect_workers));
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
}

/// The plan the unit tests share: default ports, tansu in memory, services whose
/// binaries do not exist.
#[cfg(test)]
pub(crate) fn test_plan(root: &str) -> StackPlan {
    StackPlan {
        dir: StackDir::at(root),
        ports: Ports::default(),
        kafka_storage: KafkaStorage::Memory,
        topic: "review-etl".to_owned(),
        partitions: 3,
        with_services: true,
        bin_dir: PathBuf::from("/nonexistent/bin"),
        tracing: Tracing::Embedded,
        connect_workers: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_base_port() {
        let mut p = test_plan("/x");
        p.ports.grpc_base = 40000;
        assert_eq!(p.grpc_url(Service::Extractor), "http://127.0.0.1:40000");
        assert_eq!(p.grpc_url(Service::SinkVerifier), "http://127.0.0.1:40003");
        assert_eq!(p.grpc_addr(Service::ConnectManager), "127.0.0.1:40002");
        assert_eq!(p.otlp_endpoint().as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(p.jaeger_url().as_deref(), Some("http://127.0.0.1:16686"));
        p.tracing = Tracing::Endpoint("http://jaeger:4317".to_owned());
        assert_eq!(p.otlp_endpoint().as_deref(), Some("http://jaeger:4317"));
        assert_eq!(p.jaeger_url(), None);
        let listened: Vec<u16> = p.listen_ports().iter().map(|(_, port, _)| *port).collect();
        assert_eq!(
            listened,
            [5432, 9092, 2222, 40003, 40001, 40002, 40000, 8083],
            "no collector ports with an external collector"
        );
    }

    #[test]
    fn one_worker_is_the_standalone_connect_manager_of_old() {
        let p = test_plan("/x");
        assert!(!p.distributed());
        assert_eq!(
            p.instances(),
            Service::ALL.map(Instance::single).to_vec(),
            "one process per service, none numbered"
        );
        let cm = Instance::single(Service::ConnectManager);
        assert_eq!(cm.name(), "connect-manager");
        assert_eq!(p.instance_grpc_addr(cm), "127.0.0.1:50053");
        assert_eq!(p.instance_rest_addr(cm).as_deref(), Some("127.0.0.1:8083"));
        assert_eq!(
            p.instance_rest_addr(Instance::single(Service::Extractor)),
            None
        );
        assert!(p.port_conflicts().is_empty(), "{:?}", p.port_conflicts());
    }

    #[test]
    fn workers_continue_the_grpc_and_rest_sequences() {
        let mut p = test_plan("/x");
        p.connect_workers = 3;
        assert!(p.distributed());
        let names: Vec<String> = p.instances().iter().map(Instance::name).collect();
        assert_eq!(
            names,
            [
                "sink-verifier",
                "sftp-gateway",
                "connect-manager-0",
                "connect-manager-1",
                "connect-manager-2",
                "extractor"
            ]
        );
        let addrs: Vec<(String, Option<String>)> = (0..3)
            .map(|k| {
                let w = Instance::connect_worker(k);
                (p.instance_grpc_addr(w), p.instance_rest_addr(w))
            })
            .collect();
        assert_eq!(
            addrs,
            [
                (
                    "127.0.0.1:50053".to_owned(),
                    Some("127.0.0.1:8083".to_owned())
                ),
                (
                    "127.0.0.1:50055".to_owned(),
                    Some("127.0.0.1:8084".to_owned())
                ),
                (
                    "127.0.0.1:50056".to_owned(),
                    Some("127.0.0.1:8085".to_owned())
                ),
            ]
        );
        // Worker 0 is what every other command calls "connect-manager".
        assert_eq!(p.grpc_addr(Service::ConnectManager), "127.0.0.1:50053");
        assert_eq!(p.rest_addr(), "127.0.0.1:8083");
        let listened: Vec<u16> = p.listen_ports().iter().map(|(_, port, _)| *port).collect();
        for port in [50055, 50056, 8084, 8085] {
            assert!(listened.contains(&port), "{port} in {listened:?}");
        }
        // The most workers on the default ports meet no other default port.
        p.connect_workers = MAX_WORKERS;
        assert!(p.port_conflicts().is_empty(), "{:?}", p.port_conflicts());
    }

    #[test]
    fn worker_ports_that_meet_another_flag_or_overflow_are_refused() {
        let mut p = test_plan("/x");
        p.connect_workers = 3;
        // The benchmark's old block: REST right after the four gRPC ports.
        p.ports.grpc_base = 20003;
        p.ports.rest = 20007;
        p.ports.otlp = 20008;
        let problems = p.port_conflicts();
        assert!(
            problems
                .iter()
                .any(|m| m.contains("connect-manager-1 (gRPC)") && m.contains("20007")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|m| m.contains("connect-manager-1 (REST)") && m.contains("--otlp-port")),
            "{problems:?}"
        );
        p.ports = Ports::default();
        p.ports.rest = u16::MAX - 1;
        let problems = p.port_conflicts();
        assert!(
            problems
                .iter()
                .any(|m| m.contains("connect-manager-2") && m.contains("65535")),
            "{problems:?}"
        );
        // Without services no worker listens.
        p.with_services = false;
        assert!(p.port_conflicts().is_empty(), "{:?}", p.port_conflicts());
    }

    #[test]
    fn missing_binaries_are_listed() {
        assert_eq!(test_plan("/x").missing_binaries(), Service::ALL);
    }
}
