//! What the stack is made of: its [`Service`]s, broker, [`Ports`] and tracing, planned
//! once from the flags as a [`StackPlan`], which `up` (to poll the endpoints) and the
//! supervisor (to start them) compute the same way. Each service's environment is in
//! `env`; `stack.json`, what the plan looks like while it runs, in `info`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::layout::StackDir;

/// The database the stack creates and the sink writes to.
pub const DATABASE: &str = "nlp_db";

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
    fn missing_binaries_are_listed() {
        assert_eq!(test_plan("/x").missing_binaries(), Service::ALL);
    }
}
