//! The stack under test, driven through the release `etlctl` binary exactly as a
//! user drives it (`up`, `demo`, `down`), on a private directory and a private
//! block of ports so that a stack already running on the default ports (or
//! another benchmark) is never touched.
//!
//! What `etlctl` writes is read back as files, as a script would: `stack.json`
//! for endpoints and process ids, `report.json` for the demo's figures. Only the
//! fields the benchmark needs are modelled, each defaulted, so a field added
//! to those files by etlctl does not break the benchmark.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::error::{Error, Result};

/// The SFTP login of a stack whose `stack.json` names no accounts (etlctl before
/// per-service accounts: one loopback-only user `etl`, password `etl`).
const LEGACY_SFTP_USER: &str = "etl";
const LEGACY_SFTP_PASSWORD: &str = "etl";

/// The broker storage a stack runs on. The issue names them `memory` and
/// `durable`; etlctl calls the durable one `kafka` (Apache Kafka, KRaft).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Storage {
    /// tansu's memory engine (`etlctl up --kafka-storage memory`).
    Memory,
    /// Apache Kafka with its log on disk (`--kafka-storage kafka`, etlctl's default).
    Durable,
}

impl Storage {
    /// The name in bench.json and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Durable => "durable",
        }
    }

    /// The value of `etlctl --kafka-storage`.
    pub fn etlctl_value(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Durable => "kafka",
        }
    }

    /// What actually runs, for the table's header.
    pub fn broker(self) -> &'static str {
        match self {
            Storage::Memory => "tansu, memory engine",
            Storage::Durable => "Apache Kafka (KRaft), log on disk",
        }
    }
}

/// The ports of one private stack: one block of consecutive ports, all free
/// when picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub postgres: u16,
    pub kafka: u16,
    pub sftp: u16,
    /// extractor, sftp-gateway, connect-manager, sink-verifier: base..base+3;
    /// connect-manager worker k ≥ 1: base+3+k (etlctl's `--workers` plan).
    pub grpc_base: u16,
    /// connect-manager worker 0's REST port; worker k's is rest+k.
    pub rest: u16,
    pub otlp: u16,
    pub jaeger: u16,
    /// connect-manager workers the block has room for.
    pub workers: u16,
}

/// Blocks are looked for below Linux's ephemeral range (32768–60999), where
/// an outgoing connection could take a port between the pick and the bind.
const FIRST_PORT: u16 = 20_000;
const LAST_PORT: u16 = 32_000;

/// Where the ports of a block starting at `first` go: postgres, kafka, sftp,
/// otlp, jaeger, a REST port per worker, then the gRPC ports (etlctl puts
/// worker k on REST rest+k and gRPC base+3+k, so each sequence has its room).
fn layout(first: u16, workers: u16) -> Ports {
    Ports {
        postgres: first,
        kafka: first + 1,
        sftp: first + 2,
        otlp: first + 3,
        jaeger: first + 4,
        rest: first + 5,
        grpc_base: first + 5 + workers,
        workers,
    }
}

impl Ports {
    /// The ports `etlctl up` listens on with these flags, as etlctl's own
    /// plan enumerates them (so a change there cannot go unnoticed here).
    fn listeners(&self) -> Vec<u16> {
        let plan = etlctl::stack::plan::Ports {
            postgres: self.postgres,
            kafka: self.kafka,
            sftp: self.sftp,
            grpc_base: self.grpc_base,
            rest: self.rest,
            otlp: self.otlp,
            jaeger: self.jaeger,
        };
        let mut ports = plan.infra();
        ports.extend(plan.collector());
        ports.extend(plan.services(self.workers));
        ports.into_iter().map(|(_, port, _)| port).collect()
    }
}

/// The size of a block for `workers` connect-manager workers, checking that
/// [`layout`] puts each of etlctl's listeners on a port of its own inside the
/// block: 10 ports for one worker, 14 for three.
fn block(workers: u16) -> Result<u16> {
    let probe = layout(0, workers);
    let mut ports = probe.listeners();
    let n = ports.len();
    ports.sort_unstable();
    ports.dedup();
    let size = u16::try_from(n).map_err(|_| Error::Config(format!("{n} ports per stack")))?;
    if ports.len() != n || ports.last().is_some_and(|&last| last >= size) {
        return Err(Error::Config(format!(
            "etl-bench's port layout does not fit etlctl's plan for {workers} workers: \
             {probe:?} listens on {ports:?}"
        )));
    }
    Ok(size)
}

impl Ports {
    /// A block of consecutive free ports on 127.0.0.1 for a stack of `workers`
    /// connect-manager workers (at least 1). Free when picked, not reserved:
    /// `etlctl up` checks them again and says which is busy.
    pub fn pick(workers: u16) -> Result<Ports> {
        let workers = workers.max(1);
        let size = block(workers)?;
        let span = u32::from((LAST_PORT - FIRST_PORT) / size);
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
            ^ std::process::id().wrapping_mul(7919);
        for attempt in 0..span {
            let index = ((seed.wrapping_add(attempt)) % span) as u16;
            let first = FIRST_PORT + index * size;
            // Holding every listener until the whole block is known free.
            let held: Vec<TcpListener> = (first..first + size)
                .map_while(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok())
                .collect();
            if held.len() == usize::from(size) {
                return Ok(layout(first, workers));
            }
        }
        Err(Error::Config(format!(
            "no block of {size} free ports between {FIRST_PORT} and {LAST_PORT} on 127.0.0.1"
        )))
    }
}

/// One private stack: its directory, ports and broker storage, and the log that
/// collects the output of every `etlctl` command run on it.
#[derive(Clone, Debug)]
pub struct Stack {
    etlctl: PathBuf,
    dir: PathBuf,
    storage: Storage,
    ports: Ports,
    tracing: bool,
    log: PathBuf,
}

/// Where the stack's connector tasks run, as `etlctl status --json` reports
/// them (its `connect` part): worker name → its tasks (`connector/id`), plus
/// `unassigned` and `elsewhere` when any task is.
pub type TaskMap = BTreeMap<String, Vec<String>>;

/// What `etlctl demo` did, as seen from outside.
#[derive(Clone, Debug)]
pub struct DemoRun {
    /// When etlctl printed `run … started`, i.e. `StartRun` had returned: the
    /// origin of the burst's timeline.
    pub started_at: SystemTime,
    pub report: DemoReport,
    /// The verifier's verdict: every row landed once, unaltered.
    pub passed: bool,
}

impl Stack {
    /// A stack of `ports.workers` connect-manager workers (`etlctl up --workers`).
    pub fn new(
        etlctl: &Path,
        dir: &Path,
        storage: Storage,
        ports: Ports,
        tracing: bool,
        log: &Path,
    ) -> Self {
        Stack {
            etlctl: etlctl.to_path_buf(),
            dir: dir.to_path_buf(),
            storage,
            ports,
            tracing,
            log: log.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The flags that make `up` and `demo` agree on the stack.
    fn stack_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--dir".into(), self.dir.clone().into()];
        let p = self.ports;
        for (flag, value) in [
            ("--kafka-storage", self.storage.etlctl_value().to_owned()),
            ("--pg-port", p.postgres.to_string()),
            ("--kafka-port", p.kafka.to_string()),
            ("--sftp-port", p.sftp.to_string()),
            ("--base-port", p.grpc_base.to_string()),
            ("--rest-port", p.rest.to_string()),
            ("--otlp-port", p.otlp.to_string()),
            ("--jaeger-port", p.jaeger.to_string()),
            ("--workers", p.workers.to_string()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        if !self.tracing {
            args.push("--no-tracing".into());
        }
        args
    }

    fn open_log(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io(&self.log))
    }

    fn command(&self, args: &[OsString], log: &File) -> Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new(&self.etlctl);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::io(&self.log))?)
            .stderr(log.try_clone().map_err(Error::io(&self.log))?)
            // The stack's own collector, or none: never the caller's.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .kill_on_drop(true);
        Ok(command)
    }

    /// Runs `etlctl ARGS`, output to the log; an error with the log's tail
    /// unless it exits 0.
    async fn etlctl(&self, args: Vec<OsString>) -> Result<()> {
        let what = self.describe(&args);
        let mut log = self.open_log()?;
        let _ = writeln!(log, "$ {what}");
        let status = self
            .command(&args, &log)?
            .status()
            .await
            .map_err(|source| Error::Spawn {
                what: what.clone(),
                source,
            })?;
        self.check(&what, status)
    }

    fn describe(&self, args: &[OsString]) -> String {
        let mut what = self.etlctl.display().to_string();
        for a in args {
            what.push(' ');
            what.push_str(&a.to_string_lossy());
        }
        what
    }

    fn check(&self, what: &str, status: ExitStatus) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        Err(Error::Command {
            what: what.to_owned(),
            status: status.to_string(),
            log: self.log.clone(),
            tail: etl_stack::logs::log_tail(&self.log, 30),
        })
    }

    /// `etlctl up`: returns how long it took until every component was healthy
    /// (etlctl returns exactly then).
    pub async fn up(&self) -> Result<Duration> {
        let mut args: Vec<OsString> = vec!["up".into()];
        args.extend(self.stack_args());
        let started = Instant::now();
        self.etlctl(args).await?;
        Ok(started.elapsed())
    }

    /// `etlctl down`: stops the supervisor, the services, the broker, Postgres.
    pub async fn down(&self) -> Result<()> {
        self.etlctl(vec!["down".into(), "--dir".into(), self.dir.clone().into()])
            .await
    }

    /// `etlctl connectors apply`: the connector files of `connectors_dir`,
    /// placeholders filled from the stack (what the demo does first).
    pub async fn apply_connectors(&self, connectors_dir: &Path) -> Result<()> {
        self.etlctl(vec![
            "connectors".into(),
            "apply".into(),
            "--dir".into(),
            connectors_dir.into(),
            "--stack-dir".into(),
            self.dir.clone().into(),
        ])
        .await
    }

    /// `etlctl demo` on the running stack: generates `rows` rows, applies the
    /// connectors, runs the extractor and waits for the verifier's complete
    /// report. Notes the moment StartRun returned from etlctl's own output.
    pub async fn demo(
        &self,
        rows: u64,
        seed: u64,
        chunk_size: u32,
        connectors_dir: &Path,
        timeout: Duration,
    ) -> Result<DemoRun> {
        let mut args: Vec<OsString> = vec!["demo".into()];
        args.extend(self.stack_args());
        for (flag, value) in [
            ("--rows", rows.to_string()),
            ("--seed", seed.to_string()),
            ("--chunk-size", chunk_size.to_string()),
            ("--timeout", timeout.as_secs().to_string()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args.push("--connectors-dir".into());
        args.push(connectors_dir.into());
        let what = self.describe(&args);
        let mut log = self.open_log()?;
        let _ = writeln!(log, "$ {what}");
        let mut child = self
            .command(&args, &log)?
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                what: what.clone(),
                source,
            })?;
        let mut started_at = None;
        if let Some(stdout) = child.stdout.take() {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // `run <id> started`: printed as soon as StartRun answered.
                if started_at.is_none() && line.starts_with("run ") && line.ends_with(" started") {
                    started_at = Some(SystemTime::now());
                }
                let _ = writeln!(log, "{line}");
            }
        }
        let status = child.wait().await.map_err(|source| Error::Spawn {
            what: what.clone(),
            source,
        })?;
        // 2: the report is complete but does not pass. Measured all the same
        // (and said so); anything else is a failure to run.
        let passed = status.success();
        if !passed && status.code() != Some(2) {
            self.check(&what, status)?;
        }
        let started_at = started_at.ok_or_else(|| Error::Unexpected {
            what: format!("the output of `{what}`"),
            reason: format!("no `run … started` line (see {})", self.log.display()),
        })?;
        let report = self.report()?;
        Ok(DemoRun {
            started_at,
            report,
            passed,
        })
    }

    /// Where the connector tasks run now: `etlctl status --json`'s `connect`
    /// part.
    pub async fn tasks(&self) -> Result<TaskMap> {
        Ok(self.connect_status().await?.task_map())
    }

    /// The sink tasks (`postgres-sink/1`) that are not RUNNING or have written
    /// no row yet. After a file landed, such a task may not hold a partition
    /// yet: its consumer group has a rebalance ahead (a worker's sink member
    /// joining after the file went through another), which a burst would meet.
    /// A task whose worker reports no counters counts as settled.
    pub async fn sink_tasks_without_rows(&self) -> Result<Vec<String>> {
        Ok(self.connect_status().await?.sink_tasks_without_rows())
    }

    /// `etlctl status --json`'s `connect` part. Its exit status is not looked
    /// at (1 while anything is unhealthy): the answer is what counts.
    async fn connect_status(&self) -> Result<ConnectJson> {
        let args: Vec<OsString> = vec![
            "status".into(),
            "--json".into(),
            "--dir".into(),
            self.dir.clone().into(),
        ];
        let what = self.describe(&args);
        let mut log = self.open_log()?;
        let _ = writeln!(log, "$ {what}");
        let output = self
            .command(&args, &log)?
            .stdout(Stdio::piped())
            .output()
            .await
            .map_err(|source| Error::Spawn {
                what: what.clone(),
                source,
            })?;
        let _ = log.write_all(&output.stdout);
        let status: StatusJson =
            serde_json::from_slice(&output.stdout).map_err(|e| Error::Unexpected {
                what: format!("the output of `{what}`"),
                reason: e.to_string(),
            })?;
        Ok(status.connect.unwrap_or_default())
    }

    /// `<dir>/report.json`, written by the last demo.
    pub fn report(&self) -> Result<DemoReport> {
        read_json(&self.dir.join("report.json"))
    }

    /// `<dir>/stack.json`, written by the supervisor while the stack is up.
    pub fn info(&self) -> Result<StackInfo> {
        read_json(&self.dir.join("stack.json"))
    }
}

/// A connection to the stack's Postgres at `url` (driven on its own task, which
/// ends with the client), through the one connect of the Postgres contract.
pub async fn connect_postgres(
    url: &str,
    role: &'static str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let config: tokio_postgres::Config = url.parse().map_err(Error::postgres(url))?;
    etl_pg::connect(&config, role)
        .await
        .map_err(Error::postgres(url))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Unexpected {
        what: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The part of etlctl's `stack.json` the benchmark reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StackInfo {
    pub postgres: ServerInfo,
    pub kafka: KafkaInfo,
    pub sftp_addr: String,
    /// The gateway's host key fingerprint (`SHA256:…`), once published.
    pub sftp_host_key: Option<String>,
    /// The gateway's users, each with the file holding its password.
    pub sftp_accounts: Vec<SftpAccountInfo>,
    pub tracing: TracingInfo,
    pub services: Vec<ServiceInfo>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    pub url: String,
    pub process: ProcessInfo,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct KafkaInfo {
    pub bootstrap: String,
    pub topic: String,
    pub process: ProcessInfo,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    pub pid: Option<u32>,
    pub restarts: u32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SftpAccountInfo {
    pub user: String,
    pub profile: String,
    pub password_file: PathBuf,
}

/// A login on the stack's SFTP gateway. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SftpLogin {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for SftpLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpLogin")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TracingInfo {
    pub jaeger_url: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ServiceInfo {
    pub name: String,
    /// connect-manager worker k of a distributed cluster (`--workers` > 1).
    pub worker: Option<u16>,
    pub pid: Option<u32>,
    pub restarts: u32,
}

impl ServiceInfo {
    /// `connect-manager-1` for a worker, else the service's name, as etlctl
    /// names its processes.
    pub fn process_name(&self) -> String {
        match self.worker {
            Some(k) => format!("{}-{k}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The part of `etlctl status --json` the benchmark reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct StatusJson {
    /// Absent (null) for a stack without services.
    connect: Option<ConnectJson>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct ConnectJson {
    workers: Vec<WorkerJson>,
    unassigned: Vec<TaskJson>,
    elsewhere: Vec<TaskJson>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct WorkerJson {
    name: String,
    tasks: Vec<TaskJson>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct TaskJson {
    connector: String,
    task: u32,
    /// `source` or `sink`.
    kind: String,
    state: String,
    /// Rows written (sink) or records sent (source); None when not reported.
    records: Option<u64>,
}

impl ConnectJson {
    fn sink_tasks_without_rows(&self) -> Vec<String> {
        self.workers
            .iter()
            .flat_map(|w| &w.tasks)
            .chain(&self.unassigned)
            .chain(&self.elsewhere)
            .filter(|t| t.kind == "sink" && (t.state != "RUNNING" || t.records == Some(0)))
            .map(|t| format!("{}/{}", t.connector, t.task))
            .collect()
    }

    fn task_map(self) -> TaskMap {
        let labels = |tasks: Vec<TaskJson>| -> Vec<String> {
            tasks
                .into_iter()
                .map(|t| format!("{}/{}", t.connector, t.task))
                .collect()
        };
        let mut map: TaskMap = self
            .workers
            .into_iter()
            .map(|w| (w.name, labels(w.tasks)))
            .collect();
        for (key, tasks) in [
            ("unassigned", self.unassigned),
            ("elsewhere", self.elsewhere),
        ] {
            if !tasks.is_empty() {
                map.insert(key.to_owned(), labels(tasks));
            }
        }
        map
    }
}

impl StackInfo {
    /// The login of the gateway account with `profile` (`upload`: the
    /// extractor's; `full`: connect-manager's), its password read from its
    /// file; the legacy `etl` user when the stack names no accounts.
    pub fn sftp_login(&self, profile: &str) -> Result<SftpLogin> {
        if self.sftp_accounts.is_empty() {
            return Ok(SftpLogin {
                user: LEGACY_SFTP_USER.to_owned(),
                password: LEGACY_SFTP_PASSWORD.to_owned(),
            });
        }
        let account = self
            .sftp_accounts
            .iter()
            .find(|a| a.profile == profile)
            .ok_or_else(|| {
                Error::Config(format!(
                    "the stack has no SFTP account with profile {profile} (it has: {})",
                    self.sftp_accounts
                        .iter()
                        .map(|a| format!("{} ({})", a.user, a.profile))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let text = std::fs::read_to_string(&account.password_file)
            .map_err(Error::io(&account.password_file))?;
        let password = text.lines().next().unwrap_or_default().trim().to_owned();
        if password.is_empty() {
            return Err(Error::Unexpected {
                what: account.password_file.display().to_string(),
                reason: "empty password file".to_owned(),
            });
        }
        Ok(SftpLogin {
            user: account.user.clone(),
            password,
        })
    }

    /// Every process whose resources are sampled, by name: the four services
    /// and the broker. (Postgres is a family of processes, one per connection;
    /// its postmaster's figures would say little.)
    pub fn processes(&self) -> BTreeMap<String, Option<u32>> {
        let mut out: BTreeMap<String, Option<u32>> = self
            .services
            .iter()
            .map(|s| (s.process_name(), s.pid))
            .collect();
        out.insert(BROKER.to_owned(), self.kafka.process.pid);
        out.insert(POSTGRES.to_owned(), self.postgres.process.pid);
        out
    }
}

/// The broker's name among [`StackInfo::processes`].
pub const BROKER: &str = "broker";

/// Postgres' postmaster among [`StackInfo::processes`]: its CPU includes its
/// backends' (the sink's writes and the verifier's reads run there).
pub const POSTGRES: &str = "postgres";

/// The part of etlctl's `report.json` the benchmark reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DemoReport {
    pub run_id: String,
    pub input: String,
    pub passed: bool,
    pub rows_generated: u64,
    pub rows_expected: u64,
    pub rows_landed: u64,
    /// Rows whose content also landed under another file (not a copy).
    pub overlapping_rows: u64,
    pub files: u64,
    /// StartRun to the verifier's complete report, measured by etlctl.
    pub elapsed_ms: u64,
    pub rows_per_second: f64,
    pub latency_ms: LatencyMs,
    pub extract: Option<ExtractSummary>,
    /// Chunk file name → trace id.
    pub trace_ids: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LatencyMs {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtractSummary {
    pub rows_read: u64,
    pub rows_kept: u64,
    pub files: u64,
    pub bytes: u64,
    /// The extractor's own run time: StartRun to the last chunk uploaded and
    /// registered.
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_distinct_and_fill_their_block() {
        for workers in [1, 3] {
            let p = Ports::pick(workers).expect("a free block");
            assert_eq!(p.workers, workers);
            let mut all = p.listeners();
            let size = block(workers).expect("the layout fits");
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), usize::from(size), "{p:?}");
            assert_eq!(all[all.len() - 1] - all[0], size - 1, "{p:?}");
            assert!(p.postgres >= FIRST_PORT && all[all.len() - 1] < LAST_PORT + 20);
        }
        assert_eq!(block(1).expect("fits"), 10);
        assert_eq!(block(3).expect("fits"), 14);
    }

    #[test]
    fn stack_json_and_report_json_are_read_leniently() {
        let info: StackInfo = serde_json::from_str(
            r#"{"supervisor_pid": 1, "postgres": {"url": "postgres://x", "port": 5, "process": {"pid": 7, "restarts": 0}},
                "kafka": {"bootstrap": "127.0.0.1:9", "topic": "review-etl", "process": {"pid": 8}},
                "sftp_addr": "127.0.0.1:2", "tracing": {"collector": "embedded", "jaeger_url": "http://j"},
                "services": [{"name": "connect-manager", "pid": 9, "restarts": 1, "state": "running"},
                             {"name": "connect-manager", "worker": 1, "pid": 10}]}"#,
        )
        .expect("parses");
        let processes = info.processes();
        assert_eq!(processes.get("connect-manager"), Some(&Some(9)));
        assert_eq!(processes.get("connect-manager-1"), Some(&Some(10)));
        assert_eq!(processes.get(BROKER), Some(&Some(8)));
        assert_eq!(info.tracing.jaeger_url.as_deref(), Some("http://j"));
        let legacy = info.sftp_login("upload").expect("legacy login");
        assert_eq!(legacy.user, "etl");
        assert_eq!(
            format!("{legacy:?}"),
            r#"SftpLogin { user: "etl", password: "***" }"#
        );

        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("sftp-extractor-password");
        std::fs::write(&file, "s3cret\n").expect("write");
        let with_accounts = StackInfo {
            sftp_accounts: vec![
                SftpAccountInfo {
                    user: "connect".to_owned(),
                    profile: "full".to_owned(),
                    password_file: tmp.path().join("nope"),
                },
                SftpAccountInfo {
                    user: "extractor".to_owned(),
                    profile: "upload".to_owned(),
                    password_file: file,
                },
            ],
            ..info
        };
        let login = with_accounts.sftp_login("upload").expect("login");
        assert_eq!(
            (login.user.as_str(), login.password.as_str()),
            ("extractor", "s3cret")
        );

        let report: DemoReport = serde_json::from_str(
            r#"{"run_id": "r", "rows_landed": 93, "elapsed_ms": 1100, "extract": {"elapsed_ms": 500},
                "trace_ids": {"f": "t"}, "latency_ms": {"p50": 1, "p95": 2, "max": 3}, "new_field": true}"#,
        )
        .expect("parses");
        assert_eq!(report.rows_landed, 93);
        assert_eq!(report.extract.map(|e| e.elapsed_ms), Some(500));
        assert_eq!(report.latency_ms.p99, 0);
    }

    #[test]
    fn where_tasks_run_is_read_from_etlctl_status() {
        let status: StatusJson = serde_json::from_str(
            r#"{"running": true, "healthy": true, "components": [],
                "connect": {"mode": "distributed", "workers": [
                    {"name": "connect-manager-0", "health": "healthy", "tasks": [{"connector": "postgres-sink", "task": 0, "state": "RUNNING", "worker_id": "127.0.0.1:1"}]},
                    {"name": "connect-manager-1", "tasks": []}],
                  "unassigned": [{"connector": "sftp-csv-source", "task": 1}], "elsewhere": []}}"#,
        )
        .expect("parses");
        let map = status.connect.unwrap_or_default().task_map();
        assert_eq!(map["connect-manager-0"], ["postgres-sink/0"]);
        assert!(map["connect-manager-1"].is_empty());
        assert_eq!(map["unassigned"], ["sftp-csv-source/1"]);
        assert!(!map.contains_key("elsewhere"));
        // A stack without services has no `connect`.
        let none: StatusJson =
            serde_json::from_str(r#"{"running": true, "connect": null}"#).expect("parses");
        assert!(none.connect.unwrap_or_default().task_map().is_empty());
    }

    #[test]
    fn sink_tasks_that_wrote_nothing_or_do_not_run_are_not_settled() {
        let status: StatusJson = serde_json::from_str(
            r#"{"connect": {"workers": [
                    {"name": "connect-manager-0", "tasks": [
                        {"connector": "postgres-sink", "kind": "sink", "task": 0, "state": "RUNNING", "records": 100},
                        {"connector": "sftp-csv-source", "kind": "source", "task": 0, "state": "RUNNING", "records": 0}]},
                    {"name": "connect-manager-1", "tasks": [
                        {"connector": "postgres-sink", "kind": "sink", "task": 1, "state": "RUNNING", "records": 0},
                        {"connector": "other-sink", "kind": "sink", "task": 0, "state": "RUNNING", "records": null}]}],
                  "unassigned": [{"connector": "postgres-sink", "kind": "sink", "task": 2, "state": "UNASSIGNED", "records": 5}]}}"#,
        )
        .expect("parses");
        let connect = status.connect.unwrap_or_default();
        assert_eq!(
            connect.sink_tasks_without_rows(),
            ["postgres-sink/1", "postgres-sink/2"]
        );
    }
}
