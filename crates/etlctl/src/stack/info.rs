//! `stack.json`: what the supervisor runs and where to reach it ([`StackInfo`]), written
//! atomically at every change (a restart, a pid) so `up`, `status`, `demo` and
//! `connectors` can find the stack without asking the supervisor. Serde's defaults keep
//! files written by older etlctl versions readable.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::env;
use super::plan::{
    CONNECT_GROUP_ID, DATABASE, Instance, KafkaStorage, Service, StackPlan, Tracing,
};
use super::secrets::SftpAccount;

impl StackPlan {
    /// The `stack.json` of this plan before anything runs: endpoints and log paths,
    /// services `starting` (or `missing`/`disabled`).
    pub fn stack_info(&self, supervisor_pid: u32, started_at_unix_ms: u64) -> StackInfo {
        let logs = self.dir.logs();
        let services = self
            .instances()
            .into_iter()
            .map(|instance| {
                let binary = self.binary(instance.service);
                let state = if !self.with_services {
                    ServiceState::Disabled
                } else if binary.is_file() {
                    ServiceState::Starting
                } else {
                    ServiceState::Missing
                };
                ServiceInfo {
                    name: instance.service,
                    worker: instance.worker,
                    grpc_url: self.instance_grpc_url(instance),
                    rest_url: self
                        .instance_rest_addr(instance)
                        .map(|addr| format!("http://{addr}")),
                    data_dir: Some(self.dir.instance_data(instance)),
                    binary,
                    log: self.dir.instance_log(instance),
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
            sftp_host_key: None,
            sftp_accounts: SftpAccount::ALL
                .into_iter()
                .map(|account| SftpAccountInfo {
                    user: account.user().to_owned(),
                    profile: account.profile().to_owned(),
                    root: account.root().to_owned(),
                    password_file: self.dir.sftp_password_file(account),
                })
                .collect(),
            rest_url: format!("http://{}", self.rest_addr()),
            connect: ConnectInfo {
                mode: if self.distributed() {
                    ConnectMode::Distributed
                } else {
                    ConnectMode::Standalone
                },
                group_id: self.distributed().then(|| CONNECT_GROUP_ID.to_owned()),
                workers: self.connect_workers,
            },
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
    /// The gateway's host key fingerprint (`SHA256:…`) the clients pin, once known.
    #[serde(default)]
    pub sftp_host_key: Option<String>,
    /// The gateway's users (both with the root `etl`: one tree, `sftp/etl/`), with where
    /// each password is.
    #[serde(default)]
    pub sftp_accounts: Vec<SftpAccountInfo>,
    /// connect-manager's Kafka-Connect-compatible REST API (worker 0's; every worker's
    /// is in its `services` entry).
    pub rest_url: String,
    /// How connect-manager runs: one standalone worker, or a distributed cluster.
    #[serde(default)]
    pub connect: ConnectInfo,
    /// Where the services' spans go and where to read them.
    #[serde(default)]
    pub tracing: TracingInfo,
    pub services: Vec<ServiceInfo>,
}

/// connect-manager's part of `stack.json`: the mode its workers run in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectInfo {
    pub mode: ConnectMode,
    /// The distributed cluster's group id (every worker the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `--workers`: how many connect-manager processes the supervisor runs.
    pub workers: u16,
}

/// A stack.json without it is of an etlctl from before workers: one standalone worker.
impl Default for ConnectInfo {
    fn default() -> Self {
        ConnectInfo {
            mode: ConnectMode::Standalone,
            group_id: None,
            workers: 1,
        }
    }
}

/// connect-manager's `--mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectMode {
    /// One worker; connectors in its data directory's `connectors.json`.
    #[default]
    Standalone,
    /// Workers of one group; connectors, status and offsets in Kafka topics.
    Distributed,
}

impl fmt::Display for ConnectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectMode::Standalone => "standalone",
            ConnectMode::Distributed => "distributed",
        })
    }
}

/// One SFTP user of the stack's gateway; the password stays in its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftpAccountInfo {
    pub user: String,
    /// The gateway's permission profile: `upload` or `full`.
    pub profile: String,
    /// The user's root on the gateway, a directory of its data directory.
    #[serde(default)]
    pub root: String,
    pub password_file: PathBuf,
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

/// One process of a service (connect-manager runs one per worker with `--workers` > 1,
/// each its own entry, worker 0 first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: Service,
    /// connect-manager worker k of a distributed cluster; absent for a single process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u16>,
    pub grpc_url: String,
    /// connect-manager's REST API (each worker its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_url: Option<String>,
    /// Its data directory (`ETL_DATA_DIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
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

impl ServiceInfo {
    pub fn instance(&self) -> Instance {
        Instance {
            service: self.name,
            worker: self.worker,
        }
    }

    /// `connect-manager-1` for a worker, else the service's name.
    pub fn display_name(&self) -> String {
        self.instance().name()
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

    /// The (first) process of `service`: for connect-manager, worker 0, the one every
    /// command talks to.
    pub fn service(&self, service: Service) -> Option<&ServiceInfo> {
        self.services.iter().find(|s| s.name == service)
    }

    pub fn service_mut(&mut self, service: Service) -> Option<&mut ServiceInfo> {
        self.services.iter_mut().find(|s| s.name == service)
    }

    /// The entry of one process.
    pub fn instance_mut(&mut self, instance: Instance) -> Option<&mut ServiceInfo> {
        self.services.iter_mut().find(|s| s.instance() == instance)
    }

    /// connect-manager's processes, worker 0 first.
    pub fn connect_workers(&self) -> Vec<&ServiceInfo> {
        self.services
            .iter()
            .filter(|s| s.name == Service::ConnectManager)
            .collect()
    }

    /// The gRPC URL of `service` in this stack.
    pub fn grpc_url(&self, service: Service) -> Option<&str> {
        self.service(service).map(|s| s.grpc_url.as_str())
    }

    /// The stack's value for a connector file placeholder (`${ETL_PG_PORT:-5432}`…).
    /// The environment is consulted before this; see [`crate::connectors::lookup`].
    ///
    /// `tasks.max` follows the workers (`${ETL_SINK_TASKS_MAX:-1}`,
    /// `${ETL_SOURCE_TASKS_MAX:-2}`): with N workers each connector gets N tasks, so
    /// every worker has one to run; one worker keeps the files' own defaults.
    ///
    /// The SFTP login is connect-manager's own account, and its password a reference
    /// (`${env:ETL_SFTP_PASSWORD}`) that connect-manager resolves from its environment
    /// when the connector starts: the connector config it stores and shows never holds
    /// the password.
    pub fn placeholder(&self, name: &str) -> Option<String> {
        let (sftp_host, sftp_port) = self
            .sftp_addr
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .unzip();
        match name {
            env::SFTP_HOST => sftp_host,
            env::SFTP_PORT => sftp_port,
            env::SFTP_USER => Some(SftpAccount::Connect.user().to_owned()),
            env::SFTP_PASSWORD => Some(format!("${{env:{}}}", env::SFTP_PASSWORD)),
            env::SFTP_HOST_KEY_FINGERPRINT => self.sftp_host_key.clone(),
            env::GATEWAY_URL => self.grpc_url(Service::SftpGateway).map(str::to_owned),
            env::VERIFIER_URL => self.grpc_url(Service::SinkVerifier).map(str::to_owned),
            env::TOPIC => Some(self.kafka.topic.clone()),
            env::KAFKA_BROKERS => Some(self.kafka.bootstrap.clone()),
            env::PG_HOST => Some("127.0.0.1".to_owned()),
            env::PG_PORT => Some(self.postgres.port.to_string()),
            env::PG_DATABASE => Some(DATABASE.to_owned()),
            env::PG_USER => Some("postgres".to_owned()),
            env::DATABASE_URL => Some(self.postgres.url.clone()),
            env::SINK_TASKS_MAX => Some(self.connect.workers.max(1).to_string()),
            env::SOURCE_TASKS_MAX => Some(self.connect.workers.max(2).to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::layout::StackDir;
    use crate::stack::plan::test_plan;
    use std::path::Path;

    #[test]
    fn stack_json_round_trips() {
        let mut info = test_plan("/work/.etl").stack_info(4242, 1_700_000_000_000);
        if let Some(s) = info.service_mut(Service::SftpGateway) {
            s.state = ServiceState::Running;
            s.pid = Some(77);
            s.restarts = 2;
        }
        info.sftp_host_key = Some("SHA256:key".to_owned());
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
        assert_eq!(value["sftp_host_key"], "SHA256:key");
        assert_eq!(value["sftp_accounts"][0]["user"], "extractor");
        assert_eq!(value["sftp_accounts"][0]["profile"], "upload");
        assert_eq!(value["sftp_accounts"][0]["root"], "etl");
        assert_eq!(value["sftp_accounts"][1]["root"], "etl");
        assert_eq!(
            value["sftp_accounts"][1]["password_file"],
            "/work/.etl/sftp-connect-password"
        );
        assert_eq!(value["rest_url"], "http://127.0.0.1:8083");
        assert_eq!(value["services"][1]["name"], "sftp-gateway");
        assert_eq!(value["services"][1]["grpc_url"], "http://127.0.0.1:50052");
        assert_eq!(value["services"][1]["state"], "running");
        assert_eq!(value["services"][2]["rest_url"], "http://127.0.0.1:8083");
        assert_eq!(value["services"][2]["data_dir"], "/work/.etl/connect");
        assert!(value["services"][2].get("worker").is_none());
        assert_eq!(value["connect"]["mode"], "standalone");
        assert_eq!(value["connect"]["workers"], 1);
        assert_eq!(
            value["postgres"]["log"],
            "/work/.etl/logs/postgres-5432.log"
        );
    }

    /// A stack.json of an etlctl from before the SFTP accounts still reads.
    #[test]
    fn older_stack_files_still_read() {
        let info = test_plan("/x").stack_info(1, 2);
        let mut value: serde_json::Value = serde_json::from_str(&info.to_json()).expect("json");
        let object = value.as_object_mut().expect("object");
        object.remove("sftp_host_key");
        object.remove("sftp_accounts");
        object.remove("connect");
        for service in value["services"].as_array_mut().expect("services") {
            let service = service.as_object_mut().expect("service");
            service.remove("rest_url");
            service.remove("data_dir");
        }
        let back = StackInfo::from_json(&value.to_string()).expect("parses");
        assert_eq!(back.sftp_host_key, None);
        assert!(back.sftp_accounts.is_empty());
        assert_eq!(back.connect, ConnectInfo::default());
        assert_eq!(back.connect_workers().len(), 1);
    }

    #[test]
    fn stack_file_is_written_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::new(tmp.path()).expect("dir");
        assert!(dir.read_stack().expect("read").is_none());
        let info = test_plan(tmp.path().to_str().expect("utf8")).stack_info(1, 2);
        dir.write_stack(&info).expect("write");
        assert_eq!(dir.read_stack().expect("read"), Some(info));
        dir.write_pid(99).expect("pid");
        assert_eq!(dir.read_pid(), Some(99));
        dir.remove_runtime_files();
        assert!(dir.read_stack().expect("read").is_none());
        assert_eq!(dir.read_pid(), None);
    }

    #[test]
    fn connector_placeholders_name_the_connectors_account_never_a_password() {
        let mut info = test_plan("/x").stack_info(1, 2);
        assert_eq!(info.placeholder(env::SFTP_USER).as_deref(), Some("connect"));
        assert_eq!(
            info.placeholder(env::SFTP_PASSWORD).as_deref(),
            Some("${env:ETL_SFTP_PASSWORD}")
        );
        assert_eq!(info.placeholder(env::SFTP_HOST_KEY_FINGERPRINT), None);
        info.sftp_host_key = Some("SHA256:key".to_owned());
        assert_eq!(
            info.placeholder(env::SFTP_HOST_KEY_FINGERPRINT).as_deref(),
            Some("SHA256:key")
        );
        assert_eq!(info.placeholder(env::SFTP_PORT).as_deref(), Some("2222"));
        assert_eq!(info.placeholder("ETL_PG_PASSWORD"), None);
    }

    #[test]
    fn every_worker_is_listed_with_its_addresses_worker_0_first() {
        let mut p = test_plan("/x");
        p.connect_workers = 3;
        let mut info = p.stack_info(1, 2);
        assert_eq!(info.connect.mode, ConnectMode::Distributed);
        assert_eq!(info.connect.group_id.as_deref(), Some(CONNECT_GROUP_ID));
        assert_eq!(info.connect.workers, 3);
        let workers = info.connect_workers();
        assert_eq!(workers.len(), 3);
        let w = workers[1];
        assert_eq!(w.display_name(), "connect-manager-1");
        assert_eq!(w.grpc_url, "http://127.0.0.1:50055");
        assert_eq!(w.rest_url.as_deref(), Some("http://127.0.0.1:8084"));
        assert_eq!(w.data_dir.as_deref(), Some(Path::new("/x/connect-1")));
        assert_eq!(w.log, Path::new("/x/logs/connect-manager-1.log"));
        // Every other command's "connect-manager" is worker 0.
        assert_eq!(
            info.grpc_url(Service::ConnectManager),
            Some("http://127.0.0.1:50053")
        );
        assert_eq!(info.rest_url, "http://127.0.0.1:8083");
        // One worker's entry changes alone.
        if let Some(w) = info.instance_mut(Instance::connect_worker(2)) {
            w.pid = Some(7);
        }
        let pids: Vec<Option<u32>> = info.connect_workers().iter().map(|s| s.pid).collect();
        assert_eq!(pids, [None, None, Some(7)]);
        let back = StackInfo::from_json(&info.to_json()).expect("parses");
        assert_eq!(back, info);
        // tasks.max follows the workers.
        assert_eq!(info.placeholder(env::SINK_TASKS_MAX).as_deref(), Some("3"));
        assert_eq!(
            info.placeholder(env::SOURCE_TASKS_MAX).as_deref(),
            Some("3")
        );
        let one = test_plan("/x").stack_info(1, 2);
        assert_eq!(one.placeholder(env::SINK_TASKS_MAX).as_deref(), Some("1"));
        assert_eq!(one.placeholder(env::SOURCE_TASKS_MAX).as_deref(), Some("2"));
    }

    #[test]
    fn missing_binaries_are_reported() {
        let info = test_plan("/x").stack_info(1, 2);
        assert!(
            info.services
                .iter()
                .all(|s| s.state == ServiceState::Missing)
        );
        let mut p = test_plan("/x");
        p.with_services = false;
        let info = p.stack_info(1, 2);
        assert!(
            info.services
                .iter()
                .all(|s| s.state == ServiceState::Disabled)
        );
    }
}
