//! The connectors this service runs: created, changed, paused, stopped,
//! restarted and deleted through the APIs, persisted with their target state in
//! `<data-dir>/connectors.json` so they survive a restart, each running as
//! tasks with a [`Shutdown`] of their own.
//!
//! # Target state and what the APIs show
//! Like Kafka Connect, a connector has a *target state* the operator sets:
//! STARTED, PAUSED or STOPPED. It is stored beside the config, so a paused or
//! stopped connector stays so after a restart of the service. Pausing or
//! stopping stops the tasks (their [`Shutdown`]) and keeps the config;
//! resuming starts them again. A PAUSED connector keeps its tasks' slots and
//! counters; a STOPPED one has no tasks, and only then may its offsets change.
//!
//! The state the APIs report is derived, never stored: PAUSED, STOPPED and
//! RESTARTING from the target state and restarts under way; otherwise each
//! task's own state, and the connector's from its tasks (FAILED when every task
//! is, RUNNING when one is). A stored config that no longer validates is kept
//! and shown FAILED with the reason, until it is replaced or deleted.
//!
//! # Offsets
//! The source's offsets are the files it already sent (`cleanup.policy=NONE`),
//! in its state file `<data-dir>/source-state/<name>.json`; the sink's are its
//! consumer group's committed offsets, in Kafka.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use etl_service::Shutdown;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer},
    types::RDKafkaErrorCode,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::task::{AbortHandle, JoinHandle};

use crate::{
    Error,
    cluster::{
        Cluster,
        records::{ConfigRecord, Metrics},
    },
    connector::{self, ConnectorConfig, Kind, Parsed, TaskContext},
    kafka,
    secrets::{self, Scrubber},
    source::offsets::{
        OffsetChange, load_source_offsets, reset_source_offsets, write_source_offsets,
    },
    status::{State, Status, StatusSnapshot},
};

/// How long a stopping task may take before it is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an offsets change waits for the sink's consumer group to empty: a
/// stopped sink's static members stay in the group until their session times
/// out (10 s, see `kafka::consumer`).
const GROUP_EMPTY_TIMEOUT: Duration = Duration::from_secs(30);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
const STORE_FILE: &str = "connectors.json";

/// What the operator wants a connector to do (Kafka Connect's target state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum TargetState {
    #[default]
    Started,
    Paused,
    Stopped,
}

impl TargetState {
    fn is_started(&self) -> bool {
        *self == TargetState::Started
    }

    /// Kafka Connect's `initial_state` names: RUNNING, PAUSED, STOPPED.
    pub(crate) fn from_initial_state(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "" | "RUNNING" => Some(TargetState::Started),
            "PAUSED" => Some(TargetState::Paused),
            "STOPPED" => Some(TargetState::Stopped),
            _ => None,
        }
    }
}

/// One task as the APIs show it.
#[derive(Clone, Debug)]
pub(crate) struct TaskView {
    pub(crate) id: u32,
    pub(crate) state: State,
    /// The REST `host:port` of the worker running it, in distributed mode
    /// (empty while it runs nowhere); None in standalone mode: this worker.
    pub(crate) worker: Option<String>,
    /// The task's counters and last error.
    pub(crate) status: StatusSnapshot,
}

impl TaskView {
    /// Kafka Connect's `trace`: the error, when FAILED.
    pub(crate) fn trace(&self) -> Option<&str> {
        (self.state == State::Failed && !self.status.last_error.is_empty())
            .then_some(self.status.last_error.as_str())
    }
}

/// A connector as the APIs show it.
#[derive(Clone, Debug)]
pub(crate) struct ConnectorView {
    pub(crate) name: String,
    /// The config with its secrets `[hidden]` (see `secrets`): what every API
    /// shows. The stored config is the connector's own.
    pub(crate) config: BTreeMap<String, String>,
    /// None when `connector.class` names no kind this service runs.
    pub(crate) kind: Option<Kind>,
    pub(crate) state: State,
    /// Why the connector is FAILED (its config, or its tasks' errors); empty otherwise.
    pub(crate) trace: String,
    /// Empty when STOPPED (as in Kafka Connect) or when the config is invalid.
    pub(crate) tasks: Vec<TaskView>,
    /// The tasks' counters added up (lag: the largest, as every sink task
    /// measures its whole group), with the connector's state and error.
    pub(crate) status: StatusSnapshot,
    /// The topics the connector used since its topics were last reset.
    pub(crate) active_topics: Vec<String>,
}

impl ConnectorView {
    pub(crate) fn type_name(&self) -> &'static str {
        self.kind.map(Kind::as_str).unwrap_or("unknown")
    }
}

/// A running task and how to stop it.
struct TaskRun {
    stop: Shutdown,
    /// Awaits the task and records how it ended when nobody asked it to stop.
    watcher: JoinHandle<()>,
    abort: AbortHandle,
}

impl TaskRun {
    async fn stop(self, name: &str, id: u32) {
        self.stop.trigger();
        if tokio::time::timeout(STOP_TIMEOUT, self.watcher)
            .await
            .is_err()
        {
            tracing::warn!(
                connector = name,
                task = id,
                "task did not stop in time; aborted"
            );
            self.abort.abort();
        }
    }
}

/// A task slot: its status lives across runs (pause/resume, restart).
struct TaskSlot {
    status: Arc<Status>,
    run: Option<TaskRun>,
    restarting: bool,
}

impl TaskSlot {
    fn new() -> Self {
        Self {
            status: Arc::new(Status::default()),
            run: None,
            restarting: false,
        }
    }
}

struct Inner {
    config: BTreeMap<String, String>,
    kind: Option<Kind>,
    /// The config as parsed, or why it does not validate (a stored config).
    parsed: Result<Parsed, String>,
    target: TargetState,
    tasks: Vec<TaskSlot>,
    restarting: bool,
    /// Tasks ran at least once (in this process): its topics are in use.
    ran: bool,
    /// Records counted when the topics were last reset.
    topics_reset_at: Option<u64>,
    deleted: bool,
}

struct Connector {
    /// Held across a lifecycle change (config, pause, resume, stop, restart,
    /// delete, offsets): one at a time per connector, so an old task is gone
    /// before a new one takes the same files or partitions.
    lifecycle: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
}

impl Connector {
    fn new(
        config: BTreeMap<String, String>,
        kind: Option<Kind>,
        parsed: Result<Parsed, String>,
        target: TargetState,
    ) -> Self {
        Self {
            lifecycle: tokio::sync::Mutex::new(()),
            inner: Mutex::new(Inner {
                config,
                kind,
                parsed,
                target,
                tasks: Vec::new(),
                restarting: false,
                ran: false,
                topics_reset_at: None,
                deleted: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the runs of the tasks `ids` (all when None) out of their slots.
    fn take_runs(&self, ids: Option<&[u32]>) -> Vec<(u32, TaskRun)> {
        let mut inner = self.lock();
        inner
            .tasks
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| ids.is_none_or(|ids| ids.contains(&(*i as u32))))
            .filter_map(|(i, t)| t.run.take().map(|r| (i as u32, r)))
            .collect()
    }
}

async fn stop_runs(name: &str, runs: Vec<(u32, TaskRun)>) {
    futures::future::join_all(runs.into_iter().map(|(id, r)| r.stop(name, id))).await;
}

/// The store file's shape: Kafka Connect's `{name, config}` per connector, and
/// the target state when it is not STARTED.
#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "TargetState::is_started")]
    target_state: TargetState,
}

/// One offset of a connector, in Kafka Connect's `{partition, offset}` shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConnectorOffset {
    pub(crate) partition: Json,
    /// `null` in a PATCH resets that partition's offset.
    pub(crate) offset: Json,
}

pub(crate) struct Registry {
    connectors: Mutex<BTreeMap<String, Arc<Connector>>>,
    /// Serializes writes of the store file, so the last write holds the last state.
    persisting: Mutex<()>,
    store: PathBuf,
    data_dir: PathBuf,
    instance: String,
    brokers: String,
    shutdown: Shutdown,
    /// What the tasks' own gRPC calls (the source's `WatchFiles`) carry.
    client: etl_service::ClientAuth,
    worker_id: OnceLock<String>,
    cluster_id: tokio::sync::OnceCell<String>,
    /// Distributed mode: the cluster whose config topic this registry mirrors.
    cluster: Option<Arc<Cluster>>,
    /// Distributed mode: target states read before their connector's config
    /// (a connector created PAUSED or STOPPED writes its state first).
    pending_targets: Mutex<BTreeMap<String, TargetState>>,
}

/// A short, stable name for this worker: FNV-1a of its host name and its data
/// directory's absolute path. Two workers on one host never share a data
/// directory; replicas of one container image (compose `--scale`) share the
/// path but not the host name. A restart keeps both, so the name too.
pub(crate) fn instance_of(data_dir: &Path) -> String {
    let path = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = host
        .trim()
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(path.as_os_str().as_encoded_bytes());
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("w{:08x}", hash >> 32)
}

/// The connector's state and trace, from its target state and its tasks'.
fn connector_state(inner: &Inner, tasks: &[TaskView]) -> (State, String) {
    if let Err(e) = &inner.parsed {
        return (State::Failed, e.clone());
    }
    if inner.restarting {
        return (State::Restarting, String::new());
    }
    match inner.target {
        TargetState::Paused => return (State::Paused, String::new()),
        TargetState::Stopped => return (State::Stopped, String::new()),
        TargetState::Started => {}
    }
    if !tasks.is_empty() && tasks.iter().all(|t| t.state == State::Failed) {
        let trace = if tasks.len() == 1 {
            tasks[0].status.last_error.clone()
        } else {
            tasks
                .iter()
                .map(|t| format!("task {}: {}", t.id, t.status.last_error))
                .collect::<Vec<_>>()
                .join("; ")
        };
        return (State::Failed, trace);
    }
    if tasks.iter().any(|t| t.state == State::Running) {
        (State::Running, String::new())
    } else {
        (State::Unassigned, String::new())
    }
}

fn view_of(name: &str, inner: &Inner, cluster: Option<&Cluster>) -> ConnectorView {
    // No secret leaves through a view: the config masked, errors scrubbed.
    let secrets = match &inner.parsed {
        Ok(p) => p.secrets.clone(),
        Err(_) => Scrubber::new([&inner.config]),
    };
    let tasks: Vec<TaskView> = if inner.target == TargetState::Stopped || inner.parsed.is_err() {
        Vec::new()
    } else {
        inner
            .tasks
            .iter()
            .enumerate()
            .map(|(id, t)| {
                let mut worker = cluster.map(Cluster::rest_id);
                let mut status = match cluster {
                    // Not running here: as its worker last said, if it lives.
                    Some(cluster) if t.run.is_none() && inner.target == TargetState::Started => {
                        match cluster.remote_status(name, id as u32) {
                            Some(r) => {
                                worker = Some(r.worker_id.clone());
                                remote_snapshot(&r.state, r.metrics)
                            }
                            None => {
                                worker = Some(String::new());
                                StatusSnapshot {
                                    state: State::Unassigned,
                                    ..remote_snapshot("UNASSIGNED", Metrics::default())
                                }
                            }
                        }
                    }
                    _ => t.status.snapshot(),
                };
                status.last_error = secrets.scrub(&status.last_error);
                let state = if t.restarting {
                    State::Restarting
                } else if inner.target == TargetState::Paused {
                    State::Paused
                } else {
                    status.state
                };
                TaskView {
                    id: id as u32,
                    state,
                    worker,
                    status,
                }
            })
            .collect()
    };
    let (state, trace) = connector_state(inner, &tasks);
    let mut total = StatusSnapshot {
        state,
        files_finished: 0,
        files_failed: 0,
        records: 0,
        skipped: 0,
        bytes: 0,
        lag: 0,
        stalled: false,
        last_error: trace.clone(),
        halted: !tasks.is_empty() && tasks.iter().all(|t| t.status.halted),
    };
    for t in &tasks {
        total.files_finished += t.status.files_finished;
        total.files_failed += t.status.files_failed;
        total.records += t.status.records;
        total.skipped += t.status.skipped;
        total.bytes += t.status.bytes;
        total.lag = total.lag.max(t.status.lag);
        total.stalled |= t.status.stalled && inner.target == TargetState::Started;
        if total.last_error.is_empty() {
            total.last_error = t.status.last_error.clone();
        }
    }
    let active = inner.ran && inner.topics_reset_at.is_none_or(|at| total.records > at);
    let active_topics = match (&inner.parsed, active) {
        (Ok(p), true) => p.config.topics(),
        _ => Vec::new(),
    };
    ConnectorView {
        name: name.to_string(),
        config: secrets::masked(&inner.config),
        kind: inner.kind,
        state,
        trace,
        tasks,
        status: total,
        active_topics,
    }
}

/// A task status read from the status topic, as a snapshot. `stalled` stays
/// false: each worker's health speaks for its own tasks.
fn remote_snapshot(state: &str, m: Metrics) -> StatusSnapshot {
    let state = match state {
        "RUNNING" => State::Running,
        "FAILED" => State::Failed,
        "PAUSED" => State::Paused,
        "STOPPED" => State::Stopped,
        "RESTARTING" => State::Restarting,
        _ => State::Unassigned,
    };
    StatusSnapshot {
        state,
        files_finished: m.files_finished,
        files_failed: m.files_failed,
        records: m.records,
        skipped: m.skipped,
        bytes: m.bytes,
        lag: m.lag,
        stalled: false,
        last_error: m.last_error,
        halted: m.halted,
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Registry {
    /// Prepares the data directory; call [`Registry::restore`] to start the
    /// connectors stored there.
    pub(crate) fn open(
        data_dir: &Path,
        brokers: &str,
        client: etl_service::ClientAuth,
        cluster: Option<Arc<Cluster>>,
        shutdown: Shutdown,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
            action: "create",
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            connectors: Mutex::new(BTreeMap::new()),
            persisting: Mutex::new(()),
            store: data_dir.join(STORE_FILE),
            data_dir: data_dir.to_path_buf(),
            instance: instance_of(data_dir),
            brokers: brokers.to_string(),
            shutdown,
            client,
            worker_id: OnceLock::new(),
            cluster_id: tokio::sync::OnceCell::new(),
            cluster,
            pending_targets: Mutex::new(BTreeMap::new()),
        })
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Connector>>> {
        self.connectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Names this worker in statuses (Kafka Connect's `worker_id`): the REST
    /// listener's bound `host:port`, set once it is known. Until then `rest`
    /// names the worker by the address the client reached.
    pub(crate) fn set_worker_id(&self, id: impl Into<String>) {
        let id = id.into();
        if let Some(cluster) = &self.cluster {
            cluster.set_rest_id(&id);
        }
        let _ = self.worker_id.set(id);
    }

    fn view(&self, name: &str, inner: &Inner) -> ConnectorView {
        view_of(name, inner, self.cluster.as_deref())
    }

    pub(crate) fn worker_id(&self) -> Option<&str> {
        self.worker_id.get().map(String::as_str)
    }

    /// The Kafka cluster's id (asked once, then remembered); None while the
    /// brokers do not answer.
    pub(crate) async fn cluster_id(&self) -> Option<String> {
        let brokers = self.brokers.clone();
        self.cluster_id
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let client = kafka::probe_client(&brokers).map_err(|_| ())?;
                    client
                        .client()
                        .fetch_cluster_id(Duration::from_secs(3))
                        .ok_or(())
                })
                .await
                .map_err(|_| ())?
            })
            .await
            .ok()
            .cloned()
    }

    /// Starts every stored connector in its stored target state. One whose
    /// config no longer validates is kept, FAILED with the reason.
    pub(crate) async fn restore(self: &Arc<Self>) -> Result<usize, Error> {
        if let Some(cluster) = &self.cluster {
            // The config topic is the store: its records arrive through `apply`.
            cluster.start(self.clone(), self.shutdown.clone());
            return Ok(0);
        }
        let stored = match std::fs::read(&self.store) {
            Ok(bytes) => {
                serde_json::from_slice::<Vec<Stored>>(&bytes).map_err(|e| Error::Store {
                    path: self.store.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::DataDir {
                    action: "read",
                    path: self.store.clone(),
                    source,
                });
            }
        };
        let count = stored.len();
        for s in stored {
            let kind = s
                .config
                .get("connector.class")
                .and_then(|c| connector::kind_of_class(c));
            let parsed = ConnectorConfig::parse(&s.name, &s.config).map_err(|e| {
                tracing::error!(connector = %s.name, error = %e, "stored connector is invalid; not started (FAILED until its config is replaced)");
                e.to_string()
            });
            let c = Arc::new(Connector::new(s.config, kind, parsed, s.target_state));
            self.map().insert(s.name.clone(), c.clone());
            self.start_tasks(&s.name, &c, None);
        }
        tracing::info!(connectors = count, store = %self.store.display(), "connectors restored");
        Ok(count)
    }

    /// Makes the task slots match the target state and the parsed task count,
    /// and starts the tasks `ids` (all when None) that are not running, when
    /// the target is STARTED.
    fn start_tasks(&self, name: &str, c: &Connector, ids: Option<&[u32]>) {
        // Before the connector's own lock: the numbering reads every connector.
        let owned = self.owned_tasks(name);
        let mut inner = c.lock();
        let Ok(parsed) = inner.parsed.clone() else {
            inner.tasks.clear();
            return;
        };
        match inner.target {
            TargetState::Stopped => {
                inner.tasks.clear();
                return;
            }
            TargetState::Paused | TargetState::Started => {
                let n = self.task_count(&parsed) as usize;
                inner.tasks.truncate(n);
                while inner.tasks.len() < n {
                    inner.tasks.push(TaskSlot::new());
                }
            }
        }
        if inner.target != TargetState::Started {
            return;
        }
        inner.ran = true;
        let config = self.task_config(&parsed);
        let mut started = Vec::new();
        for (id, slot) in inner.tasks.iter_mut().enumerate() {
            let id = id as u32;
            if slot.run.is_some() || ids.is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            if owned.as_ref().is_some_and(|o| !o.contains(&id)) {
                continue;
            }
            slot.status.restart();
            slot.run = Some(self.spawn_task(name, id, config.clone(), slot.status.clone()));
            started.push(id);
        }
        if !started.is_empty() {
            tracing::info!(
                connector = name,
                kind = parsed.config.kind().as_str(),
                tasks = ?started,
                "connector tasks started"
            );
        }
    }

    fn spawn_task(
        &self,
        name: &str,
        id: u32,
        config: ConnectorConfig,
        status: Arc<Status>,
    ) -> TaskRun {
        let stop = self.shutdown.child();
        // Task 0 keeps the worker's instance alone: the sink's group.instance.id
        // stays what it was before connectors had several tasks.
        let instance = if id == 0 {
            self.instance.clone()
        } else {
            format!("{}t{id}", self.instance)
        };
        let task = config.spawn(TaskContext {
            name: name.to_string(),
            task: id,
            brokers: self.brokers.clone(),
            status: status.clone(),
            shutdown: stop.clone(),
            instance,
            data_dir: self.data_dir.clone(),
            client: self.client.clone(),
            cluster: self.cluster.as_ref().map(|c| c.task_cluster()),
        });
        let abort = task.abort_handle();
        let asked = stop.clone();
        let connector = name.to_string();
        let watcher = tokio::spawn(async move {
            let ended = task.await;
            if asked.is_triggered() {
                return;
            }
            let why = match ended {
                Ok(()) => "the task ended without being stopped".to_string(),
                Err(e) if e.is_panic() => {
                    format!("the task panicked: {}", panic_text(e.into_panic()))
                }
                Err(e) => format!("the task was cancelled: {e}"),
            };
            tracing::error!(%connector, task = id, error = %why, "connector task ended; restart it to run it again");
            status.ended(why);
        });
        TaskRun {
            stop,
            watcher,
            abort,
        }
    }

    fn find(&self, name: &str) -> Result<Arc<Connector>, Error> {
        self.map()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Creates `name`, or replaces its config (stopping the old tasks first).
    /// Returns the connector and whether it is new. With `create`, an existing
    /// connector is an error instead, and the new one starts in that state.
    pub(crate) async fn put(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        create: Option<TargetState>,
    ) -> Result<(ConnectorView, bool), Error> {
        let Some(cluster) = &self.cluster else {
            return self.put_local(name, config, create).await;
        };
        // Validated here, so a bad config is refused with its reason instead
        // of landing in the cluster's topic as a FAILED connector.
        ConnectorConfig::parse(name, &config)?;
        let existing = self.map().get(name).cloned();
        if let Some(c) = &existing {
            if create.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            let inner = c.lock();
            if inner.config == config && inner.parsed.is_ok() {
                return Ok((self.view(name, &inner), false));
            }
        }
        let mut records = Vec::new();
        if let Some(target) = create {
            records.push(ConfigRecord::Target {
                name: name.to_string(),
                target: Some(target),
            });
        }
        records.push(ConfigRecord::Connector {
            name: name.to_string(),
            config: Some(config),
        });
        cluster.write(records).await?;
        Ok((self.get(name).await?, existing.is_none()))
    }

    /// Creates or replaces `name` on this worker alone: the standalone API, and
    /// in distributed mode what a config record read from the topic does.
    async fn put_local(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        create: Option<TargetState>,
    ) -> Result<(ConnectorView, bool), Error> {
        let parsed = ConnectorConfig::parse(name, &config)?;
        let kind = Some(parsed.config.kind());
        let fresh = Arc::new(Connector::new(
            config.clone(),
            kind,
            Ok(parsed.clone()),
            create.unwrap_or_default(),
        ));
        // Locked before anyone else can see it: nothing acts on it before it runs.
        let fresh_op = fresh.lifecycle.lock().await;
        let existing = {
            let mut map = self.map();
            match map.get(name) {
                Some(_) if create.is_some() => return Err(Error::AlreadyExists(name.to_string())),
                Some(c) => Some(c.clone()),
                None => {
                    map.insert(name.to_string(), fresh.clone());
                    None
                }
            }
        };
        let Some(c) = existing else {
            if let Err(e) = self.persist() {
                self.map().remove(name);
                return Err(e);
            }
            self.start_tasks(name, &fresh, None);
            tracing::info!(connector = name, "connector created");
            let view = self.view(name, &fresh.lock());
            drop(fresh_op);
            return Ok((view, true));
        };
        drop(fresh_op);
        let _op = c.lifecycle.lock().await;
        let old = {
            let mut inner = c.lock();
            if inner.deleted {
                return Err(Error::NotFound(name.to_string()));
            }
            if inner.config == config && inner.parsed.is_ok() {
                // Re-applying an unchanged config (etlctl does on every start)
                // keeps the tasks running instead of restarting them.
                return Ok((self.view(name, &inner), false));
            }
            let old_config = std::mem::replace(&mut inner.config, config);
            let old_parsed = std::mem::replace(&mut inner.parsed, Ok(parsed));
            let old_kind = std::mem::replace(&mut inner.kind, kind);
            (old_config, old_parsed, old_kind)
        };
        // Persist first: a connector that runs must survive a restart.
        if let Err(e) = self.persist() {
            let mut inner = c.lock();
            (inner.config, inner.parsed, inner.kind) = old;
            return Err(e);
        }
        // The old tasks must be gone before the new ones take the same files.
        stop_runs(name, c.take_runs(None)).await;
        self.start_tasks(name, &c, None);
        tracing::info!(connector = name, "connector config replaced");
        let view = self.view(name, &c.lock());
        Ok((view, false))
    }

    /// Kafka Connect's `PATCH /connectors/{name}/config`: sets the keys with a
    /// value, removes those with None, and applies the result like a PUT.
    pub(crate) async fn patch(
        &self,
        name: &str,
        patch: BTreeMap<String, Option<String>>,
    ) -> Result<ConnectorView, Error> {
        // The stored config, not the view (whose secrets are `[hidden]`).
        let mut config = self.find(name)?.lock().config.clone();
        for (k, v) in patch {
            match v {
                Some(v) => config.insert(k, v),
                None => config.remove(&k),
            };
        }
        Ok(self.put(name, config, None).await?.0)
    }

    pub(crate) async fn list(&self) -> Vec<ConnectorView> {
        let all: Vec<(String, Arc<Connector>)> = self
            .map()
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        all.iter().map(|(n, c)| self.view(n, &c.lock())).collect()
    }

    pub(crate) async fn get(&self, name: &str) -> Result<ConnectorView, Error> {
        let c = self.find(name)?;
        let view = self.view(name, &c.lock());
        Ok(view)
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<(), Error> {
        let Some(cluster) = &self.cluster else {
            return self.delete_local(name).await;
        };
        let tasks = self.find(name)?.lock().tasks.len() as u32;
        cluster
            .write(vec![
                ConfigRecord::Connector {
                    name: name.to_string(),
                    config: None,
                },
                ConfigRecord::Target {
                    name: name.to_string(),
                    target: None,
                },
            ])
            .await?;
        cluster.forget_statuses(name, tasks).await;
        Ok(())
    }

    async fn delete_local(&self, name: &str) -> Result<(), Error> {
        let c = self.find(name)?;
        let _op = c.lifecycle.lock().await;
        if c.lock().deleted {
            return Err(Error::NotFound(name.to_string()));
        }
        c.lock().deleted = true;
        self.map().remove(name);
        if let Err(e) = self.persist() {
            c.lock().deleted = false;
            self.map().insert(name.to_string(), c.clone());
            return Err(e);
        }
        stop_runs(name, c.take_runs(None)).await;
        tracing::info!(connector = name, "connector deleted");
        Ok(())
    }

    /// Sets the target state (persisted), then stops or starts the tasks to match.
    async fn set_target(&self, name: &str, target: TargetState) -> Result<(), Error> {
        let Some(cluster) = &self.cluster else {
            return self.set_target_local(name, target).await;
        };
        if self.find(name)?.lock().target == target {
            return Ok(());
        }
        cluster
            .write(vec![ConfigRecord::Target {
                name: name.to_string(),
                target: Some(target),
            }])
            .await
    }

    async fn set_target_local(&self, name: &str, target: TargetState) -> Result<(), Error> {
        let c = self.find(name)?;
        let _op = c.lifecycle.lock().await;
        let before = {
            let mut inner = c.lock();
            if inner.deleted {
                return Err(Error::NotFound(name.to_string()));
            }
            std::mem::replace(&mut inner.target, target)
        };
        if before == target {
            return Ok(());
        }
        if let Err(e) = self.persist() {
            c.lock().target = before;
            return Err(e);
        }
        if target != TargetState::Started {
            stop_runs(name, c.take_runs(None)).await;
        }
        self.start_tasks(name, &c, None);
        tracing::info!(connector = name, target = ?target, "connector target state changed");
        Ok(())
    }

    /// Stops the tasks and keeps their slots and the config: PAUSED, also after
    /// a restart of the service, until resumed.
    pub(crate) async fn pause(&self, name: &str) -> Result<(), Error> {
        self.set_target(name, TargetState::Paused).await
    }

    /// Starts a PAUSED or STOPPED connector's tasks again.
    pub(crate) async fn resume(&self, name: &str) -> Result<(), Error> {
        self.set_target(name, TargetState::Started).await
    }

    /// Stops the tasks and drops them: STOPPED, the state in which offsets may change.
    pub(crate) async fn stop(&self, name: &str) -> Result<(), Error> {
        self.set_target(name, TargetState::Stopped).await
    }

    /// Kafka Connect's restart. The connector is no more than its tasks here,
    /// so restarting the connector restarts its tasks: all of them, or with
    /// `only_failed` the FAILED ones (and all when the connector itself is
    /// FAILED). Returns the status as it was while restarting, with RESTARTING
    /// where a restart happened. A PAUSED or STOPPED connector restarts nothing.
    pub(crate) async fn restart(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<ConnectorView, Error> {
        let Some(cluster) = &self.cluster else {
            return self.restart_local(name, include_tasks, only_failed).await;
        };
        // The plan as this worker sees it; each worker restarts its own tasks
        // when it reads the request.
        let mut plan = self.get(name).await?;
        if plan.state == State::Paused
            || plan.state == State::Stopped
            || plan.state == State::Failed && plan.tasks.is_empty()
        {
            return Ok(plan);
        }
        let connector_failed = plan.state == State::Failed;
        let restart_connector = !only_failed || connector_failed;
        for t in plan.tasks.iter_mut() {
            let chosen = if include_tasks {
                !only_failed || t.state == State::Failed || connector_failed
            } else {
                restart_connector
            };
            if chosen {
                t.state = State::Restarting;
            }
        }
        if restart_connector {
            plan.state = State::Restarting;
        }
        cluster
            .write(vec![ConfigRecord::Restart {
                name: name.to_string(),
                include_tasks,
                only_failed,
            }])
            .await?;
        Ok(plan)
    }

    async fn restart_local(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<ConnectorView, Error> {
        let c = self.find(name)?;
        let _op = c.lifecycle.lock().await;
        let (plan, ids) = {
            let mut inner = c.lock();
            if inner.deleted {
                return Err(Error::NotFound(name.to_string()));
            }
            let now = self.view(name, &inner);
            if inner.target != TargetState::Started || inner.parsed.is_err() {
                return Ok(now);
            }
            let connector_failed = now.state == State::Failed;
            let restart_connector = !only_failed || connector_failed;
            let ids: Vec<u32> = now
                .tasks
                .iter()
                .filter(|t| {
                    if include_tasks {
                        !only_failed || t.state == State::Failed || connector_failed
                    } else {
                        restart_connector
                    }
                })
                .map(|t| t.id)
                .collect();
            inner.restarting = restart_connector;
            for id in &ids {
                inner.tasks[*id as usize].restarting = true;
            }
            (self.view(name, &inner), ids)
        };
        stop_runs(name, c.take_runs(Some(&ids))).await;
        {
            let mut inner = c.lock();
            inner.restarting = false;
            for t in inner.tasks.iter_mut() {
                t.restarting = false;
            }
        }
        self.start_tasks(name, &c, Some(&ids));
        tracing::info!(connector = name, tasks = ?ids, "connector restarted");
        Ok(plan)
    }

    /// Restarts one task (a PAUSED connector's task stays paused).
    pub(crate) async fn restart_task(&self, name: &str, id: u32) -> Result<(), Error> {
        let Some(cluster) = &self.cluster else {
            return self.restart_task_local(name, id).await;
        };
        let exists = {
            let c = self.find(name)?;
            let inner = c.lock();
            inner.parsed.is_ok()
                && inner.target != TargetState::Stopped
                && (id as usize) < inner.tasks.len()
        };
        if !exists {
            return Err(Error::TaskNotFound {
                connector: name.to_string(),
                task: id,
            });
        }
        cluster
            .write(vec![ConfigRecord::RestartTask {
                name: name.to_string(),
                task: id,
            }])
            .await
    }

    async fn restart_task_local(&self, name: &str, id: u32) -> Result<(), Error> {
        let c = self.find(name)?;
        let _op = c.lifecycle.lock().await;
        {
            let mut inner = c.lock();
            let exists = !inner.deleted
                && inner.parsed.is_ok()
                && inner.target != TargetState::Stopped
                && (id as usize) < inner.tasks.len();
            if !exists {
                return Err(Error::TaskNotFound {
                    connector: name.to_string(),
                    task: id,
                });
            }
            inner.tasks[id as usize].restarting = true;
        }
        stop_runs(name, c.take_runs(Some(&[id]))).await;
        c.lock().tasks[id as usize].restarting = false;
        self.start_tasks(name, &c, Some(&[id]));
        tracing::info!(connector = name, task = id, "task restarted");
        Ok(())
    }

    /// Forgets the topics in use: none are listed until records move again.
    pub(crate) async fn reset_topics(&self, name: &str) -> Result<(), Error> {
        let c = self.find(name)?;
        let mut inner = c.lock();
        let records = self.view(name, &inner).status.records;
        inner.topics_reset_at = Some(records);
        Ok(())
    }

    /// Distributed mode: why this worker cannot serve yet (see
    /// `Cluster::not_ready`); Ok in standalone mode.
    pub(crate) fn cluster_ready(&self) -> Result<(), String> {
        match self
            .cluster
            .as_ref()
            .and_then(|c| Some((c, c.not_ready()?)))
        {
            Some((c, why)) => Err(format!(
                "not yet joined to the cluster ({}): {why}",
                c.describe()
            )),
            None => Ok(()),
        }
    }

    /// Connectors that have records waiting and moved nothing for a long time.
    pub(crate) async fn stalled(&self) -> Vec<String> {
        self.list()
            .await
            .into_iter()
            .filter(|v| v.status.stalled)
            .map(|v| v.name)
            .collect()
    }

    /// Stops every connector and waits for their tasks (service shutdown).
    pub(crate) async fn stop_all(&self) {
        let all = std::mem::take(&mut *self.map());
        let stops = all.into_iter().map(|(n, c)| async move {
            let runs = c.take_runs(None);
            stop_runs(&n, runs).await;
        });
        futures::future::join_all(stops).await;
    }

    /// Writes the store atomically (temp file + rename), readable only by us:
    /// configs hold passwords, as Kafka Connect's config topic does.
    fn persist(&self) -> Result<(), Error> {
        if self.cluster.is_some() {
            // Distributed mode: the config topic is the store.
            return Ok(());
        }
        let _one_at_a_time = self
            .persisting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connectors: Vec<Stored> = {
            let map = self.map();
            map.iter()
                .filter_map(|(n, c)| {
                    let inner = c.lock();
                    (!inner.deleted).then(|| Stored {
                        name: n.clone(),
                        config: inner.config.clone(),
                        target_state: inner.target,
                    })
                })
                .collect()
        };
        let io = |action, source| Error::DataDir {
            action,
            path: self.store.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&connectors)
            .map_err(|e| io("encode", std::io::Error::other(e)))?;
        let tmp = self.store.with_extension("json.tmp");
        write_private(&tmp, &json).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &self.store).map_err(|e| io("replace", e))?;
        Ok(())
    }

    // ---- Distributed mode ----------------------------------------------------

    /// Tasks a connector runs. In distributed mode the source runs `tasks.max`
    /// tasks, one file at a time each, so its files spread over the workers.
    fn task_count(&self, parsed: &Parsed) -> u32 {
        match (&parsed.config, &self.cluster) {
            (ConnectorConfig::Source(c), Some(_)) => c.tasks.max(1) as u32,
            _ => parsed.tasks,
        }
    }

    /// The config each task of `parsed` runs with (see [`Registry::task_count`]).
    fn task_config(&self, parsed: &Parsed) -> ConnectorConfig {
        match (&parsed.config, &self.cluster) {
            (ConnectorConfig::Source(c), Some(_)) => {
                let mut c = c.clone();
                c.tasks = 1;
                ConnectorConfig::Source(c)
            }
            (config, _) => config.clone(),
        }
    }

    /// Distributed mode: the ids of `name`'s tasks this worker holds the slots
    /// of (see `cluster`: tasks numbered over every connector that is not
    /// STOPPED, by name then id). None in standalone mode: all of them.
    fn owned_tasks(&self, name: &str) -> Option<BTreeSet<u32>> {
        let cluster = self.cluster.as_ref()?;
        let slots = cluster.slots();
        let all: Vec<(String, Arc<Connector>)> = self
            .map()
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        let mut index = 0usize;
        let mut owned = BTreeSet::new();
        for (n, c) in all {
            let count = {
                let inner = c.lock();
                match &inner.parsed {
                    Ok(p) if !inner.deleted && inner.target != TargetState::Stopped => {
                        self.task_count(p)
                    }
                    _ => 0,
                }
            };
            for id in 0..count {
                if n == name && slots.owns(index) {
                    owned.insert(id);
                }
                index += 1;
            }
        }
        Some(owned)
    }

    /// Distributed mode: applies one record of the config topic to this worker.
    pub(crate) async fn apply(&self, record: ConfigRecord) {
        let result = match record {
            ConfigRecord::Connector {
                name,
                config: Some(config),
            } => self.apply_config(&name, config).await,
            ConfigRecord::Connector { name, config: None } => {
                match self.delete_local(&name).await {
                    Err(Error::NotFound(_)) => Ok(()),
                    other => other,
                }
            }
            ConfigRecord::Target {
                name,
                target: Some(target),
            } => match self.set_target_local(&name, target).await {
                Err(Error::NotFound(_)) => {
                    self.pending().insert(name, target);
                    Ok(())
                }
                other => other,
            },
            ConfigRecord::Target { name, target: None } => {
                self.pending().remove(&name);
                Ok(())
            }
            ConfigRecord::Restart {
                name,
                include_tasks,
                only_failed,
            } => self
                .restart_local(&name, include_tasks, only_failed)
                .await
                .map(|_| ()),
            ConfigRecord::RestartTask { name, task } => {
                let owned = self.owned_tasks(&name).unwrap_or_default();
                if owned.contains(&task) {
                    self.restart_task_local(&name, task).await
                } else {
                    Ok(())
                }
            }
        };
        match result {
            Ok(()) | Err(Error::NotFound(_) | Error::TaskNotFound { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "cluster config record not applied"),
        }
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<String, TargetState>> {
        self.pending_targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A connector config read from the config topic: created or replaced,
    /// and kept FAILED with its reason when it does not validate here (a
    /// secret this worker cannot resolve, say).
    async fn apply_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        match ConnectorConfig::parse(name, &config) {
            Ok(_) => {
                let target = self.pending().remove(name);
                let fresh = !self.map().contains_key(name);
                self.put_local(name, config, fresh.then(|| target.unwrap_or_default()))
                    .await
                    .map(|_| ())
            }
            Err(e) => {
                tracing::error!(connector = %name, error = %e, "connector config from the cluster is invalid here; not started");
                let kind = config
                    .get("connector.class")
                    .and_then(|c| connector::kind_of_class(c));
                let target = self.pending().remove(name).unwrap_or_default();
                let old = self.map().insert(
                    name.to_string(),
                    Arc::new(Connector::new(config, kind, Err(e.to_string()), target)),
                );
                if let Some(old) = old {
                    let _op = old.lifecycle.lock().await;
                    old.lock().deleted = true;
                    stop_runs(name, old.take_runs(None)).await;
                }
                Ok(())
            }
        }
    }

    /// Distributed mode: stops the tasks whose slots this worker no longer
    /// holds and starts those it now holds.
    pub(crate) async fn reconcile(&self) {
        let all: Vec<(String, Arc<Connector>)> = self
            .map()
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        for (name, c) in all {
            let _op = c.lifecycle.lock().await;
            if c.lock().deleted {
                continue;
            }
            let owned = self.owned_tasks(&name).unwrap_or_default();
            let lost: Vec<u32> = c
                .lock()
                .tasks
                .iter()
                .enumerate()
                .filter(|(id, t)| t.run.is_some() && !owned.contains(&(*id as u32)))
                .map(|(id, _)| id as u32)
                .collect();
            if !lost.is_empty() {
                tracing::info!(connector = %name, tasks = ?lost, "tasks moved to another worker; stopping them here");
                stop_runs(&name, c.take_runs(Some(&lost))).await;
            }
            self.start_tasks(&name, &c, None);
        }
    }

    /// Distributed mode: what the status topic should say of a task this
    /// worker ran and no longer runs, as Kafka Connect's workers write it:
    /// PAUSED while its connector is paused, UNASSIGNED while it waits for
    /// its next worker (it moved, or restarts). None when there is nothing to
    /// say: the connector is deleted, stopped or invalid here, or has fewer
    /// tasks now.
    pub(crate) fn idle_state(&self, name: &str, task: u32) -> Option<&'static str> {
        let c = self.map().get(name).cloned()?;
        let inner = c.lock();
        if inner.deleted || inner.parsed.is_err() || task as usize >= inner.tasks.len() {
            return None;
        }
        match inner.target {
            TargetState::Started => Some(State::Unassigned.as_str()),
            TargetState::Paused => Some(State::Paused.as_str()),
            TargetState::Stopped => None,
        }
    }

    /// The tasks running on this worker: connector, task id, state and counters.
    pub(crate) fn local_statuses(&self) -> Vec<(String, u32, &'static str, Metrics)> {
        let all: Vec<(String, Arc<Connector>)> = self
            .map()
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        let mut out = Vec::new();
        for (name, c) in all {
            let inner = c.lock();
            let secrets = match &inner.parsed {
                Ok(p) => p.secrets.clone(),
                Err(_) => continue,
            };
            for (id, t) in inner.tasks.iter().enumerate() {
                if t.run.is_none() {
                    continue;
                }
                let s = t.status.snapshot();
                let state = if t.restarting {
                    State::Restarting
                } else {
                    s.state
                };
                out.push((
                    name.clone(),
                    id as u32,
                    state.as_str(),
                    Metrics {
                        files_finished: s.files_finished,
                        files_failed: s.files_failed,
                        records: s.records,
                        skipped: s.skipped,
                        bytes: s.bytes,
                        lag: s.lag,
                        stalled: s.stalled,
                        halted: s.halted,
                        last_error: secrets.scrub(&s.last_error),
                    },
                ));
            }
        }
        out
    }

    // ---- Offsets -------------------------------------------------------------

    /// The parsed config of a connector that must be STOPPED (offsets change
    /// only then, as in Kafka Connect).
    fn stopped_config(&self, name: &str, c: &Connector) -> Result<ConnectorConfig, Error> {
        let inner = c.lock();
        if inner.deleted {
            return Err(Error::NotFound(name.to_string()));
        }
        if inner.target != TargetState::Stopped {
            return Err(Error::WrongState(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. This can be done for the specified connector by issuing a 'PUT' request to the '/connectors/{name}/stop' endpoint"
            )));
        }
        inner
            .parsed
            .as_ref()
            .map(|p| p.config.clone())
            .map_err(|e| Error::config(name, e.clone()))
    }

    /// The connector's offsets: the source's sent files, the sink's committed
    /// offsets.
    pub(crate) async fn offsets(&self, name: &str) -> Result<Vec<ConnectorOffset>, Error> {
        let c = self.find(name)?;
        let config = {
            let inner = c.lock();
            inner
                .parsed
                .as_ref()
                .map(|p| p.config.clone())
                .map_err(|e| Error::config(name, e.clone()))?
        };
        match config {
            ConnectorConfig::Source(_) => {
                let state = self.read_source_state(name).await?;
                Ok(source_offsets(&state))
            }
            ConnectorConfig::Sink(sink) => {
                let brokers = self.brokers.clone();
                blocking(move || sink_offsets(&brokers, &sink.group_id, &sink.topics)).await
            }
        }
    }

    /// Kafka Connect's `PATCH /connectors/{name}/offsets`, on a STOPPED connector.
    pub(crate) async fn alter_offsets(
        &self,
        name: &str,
        offsets: Vec<ConnectorOffset>,
    ) -> Result<String, Error> {
        if offsets.is_empty() {
            return Err(Error::InvalidRequest(
                "Partitions / offsets need to be provided for an alter offsets request".into(),
            ));
        }
        let c = self.find(name)?;
        let _op = c.lifecycle.lock().await;
        match self.stopped_config(name, &c)? {
            ConnectorConfig::Source(_) => {
                let mut changes = Vec::new();
                for o in &offsets {
                    changes.push(parse_source_offset(o)?);
                }
                if let Some(cluster) = &self.cluster {
                    let changes: Vec<OffsetChange> = changes
                        .into_iter()
                        .map(|(name, offset)| OffsetChange::File {
                            name,
                            stat: offset.map(|o| {
                                (
                                    o.get(0).and_then(Json::as_u64).unwrap_or(0),
                                    o.get(1).and_then(Json::as_u64),
                                )
                            }),
                        })
                        .collect();
                    write_source_offsets(&self.brokers, cluster.offset_topic(), name, &changes)
                        .await?;
                    tracing::info!(
                        connector = name,
                        offsets = offsets.len(),
                        "connector offsets altered"
                    );
                    return Ok(
                        "The offsets for this connector have been altered successfully".into(),
                    );
                }
                let mut state = self.read_source_state(name).await?;
                let sent = sent_map(&mut state);
                for (file, offset) in changes {
                    match offset {
                        Some(o) => sent.insert(file, o),
                        None => sent.remove(&file),
                    };
                }
                self.write_source_state(name, &state)?;
            }
            ConnectorConfig::Sink(sink) => {
                let mut changes = Vec::new();
                for o in &offsets {
                    changes.push(parse_sink_offset(o)?);
                }
                let brokers = self.brokers.clone();
                blocking(move || alter_sink_offsets(&brokers, &sink.group_id, &changes)).await?;
            }
        }
        tracing::info!(
            connector = name,
            offsets = offsets.len(),
            "connector offsets altered"
        );
        Ok("The offsets for this connector have been altered successfully".into())
    }

    /// Kafka Connect's `DELETE /connectors/{name}/offsets`, on a STOPPED
    /// connector: the source forgets the files it sent (its pinned schema
    /// stays); the sink's consumer group is deleted, so it reads its topics
    /// from the start (the upsert makes that harmless).
    pub(crate) async fn reset_offsets(&self, name: &str) -> Result<String, Error> {
        let c = self.find(name)?;
        let _op = c.lifecycle.lock().await;
        match self.stopped_config(name, &c)? {
            ConnectorConfig::Source(_) => match &self.cluster {
                Some(cluster) => {
                    reset_source_offsets(&self.brokers, cluster.offset_topic(), name, false)
                        .await?;
                }
                None => {
                    let mut state = self.read_source_state(name).await?;
                    sent_map(&mut state).clear();
                    self.write_source_state(name, &state)?;
                }
            },
            ConnectorConfig::Sink(sink) => {
                let brokers = self.brokers.clone();
                let group = sink.group_id.clone();
                blocking(move || wait_group_empty(&brokers, &group)).await?;
                delete_group(&self.brokers, &sink.group_id).await?;
            }
        }
        tracing::info!(connector = name, "connector offsets reset");
        Ok("The offsets for this connector have been reset successfully".into())
    }

    /// `<data-dir>/source-state/<name>.json`, named by the source's own rule.
    fn source_state_path(&self, name: &str) -> PathBuf {
        crate::source::state::StateFile::new(&self.data_dir, name)
            .path()
            .to_path_buf()
    }

    /// The state file as JSON (an absent file is an empty object), so that the
    /// keys offsets do not touch (the pinned schema) are written back as they were.
    /// In distributed mode: the connector's records of the offset topic, in
    /// the same shape.
    async fn read_source_state(&self, name: &str) -> Result<Json, Error> {
        if let Some(cluster) = &self.cluster {
            let state = load_source_offsets(&self.brokers, cluster.offset_topic(), name).await?;
            return serde_json::to_value(&state).map_err(|e| Error::Kafka {
                brokers: self.brokers.clone(),
                message: format!("source offsets of {name}: {e}"),
            });
        }
        let path = self.source_state_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Store {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
            Err(source) => Err(Error::DataDir {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn write_source_state(&self, name: &str, state: &Json) -> Result<(), Error> {
        let path = self.source_state_path(name);
        let io = |action, source| Error::DataDir {
            action,
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        }
        let bytes =
            serde_json::to_vec_pretty(state).map_err(|e| io("encode", std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        write_private(&tmp, &bytes).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("replace", e))
    }
}

/// Runs blocking librdkafka calls off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task {
            what: "Kafka request",
            reason: e.to_string(),
        })?
}

/// The `sent` map of a source state (created when absent).
fn sent_map(state: &mut Json) -> &mut serde_json::Map<String, Json> {
    if !state.is_object() {
        *state = json!({});
    }
    let obj = state.as_object_mut().expect("an object, just made sure");
    let sent = obj.entry("sent").or_insert_with(|| json!({}));
    if !sent.is_object() {
        *sent = json!({});
    }
    sent.as_object_mut().expect("an object, just made sure")
}

/// A sent file `name: [size, mtime]` as `{"partition": {"file"}, "offset": {"size", "mtime"}}`.
fn source_offsets(state: &Json) -> Vec<ConnectorOffset> {
    let Some(sent) = state.get("sent").and_then(Json::as_object) else {
        return Vec::new();
    };
    sent.iter()
        .map(|(file, stat)| ConnectorOffset {
            partition: json!({ "file": file }),
            offset: json!({
                "size": stat.get(0).cloned().unwrap_or(Json::Null),
                "mtime": stat.get(1).cloned().unwrap_or(Json::Null),
            }),
        })
        .collect()
}

fn parse_source_offset(o: &ConnectorOffset) -> Result<(String, Option<Json>), Error> {
    let bad = |m: &str| Error::InvalidRequest(m.to_string());
    let file = o
        .partition
        .get("file")
        .and_then(Json::as_str)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| bad("The partition for a source connector offset must contain the key 'file' (a file name in the input directory)"))?;
    if o.offset.is_null() {
        return Ok((file.to_string(), None));
    }
    let number = |key: &str, optional: bool| -> Result<Json, Error> {
        match o.offset.get(key) {
            Some(Json::Null) | None if optional => Ok(Json::Null),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(Json::from)
                .ok_or_else(|| bad(&format!("The offset's {key:?} must be a whole number"))),
            None => Err(bad(&format!(
                "The offset for a source connector should either be null or contain the key {key:?}"
            ))),
        }
    };
    Ok((
        file.to_string(),
        Some(json!([number("size", false)?, number("mtime", true)?])),
    ))
}

/// A number given as JSON number or text (Kafka Connect accepts both).
fn json_i64(v: Option<&Json>) -> Option<i64> {
    v.and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    })
}

type SinkOffsetChange = (String, i32, Option<i64>);

fn parse_sink_offset(o: &ConnectorOffset) -> Result<SinkOffsetChange, Error> {
    let bad = |m: &str| Error::InvalidRequest(m.to_string());
    if o.partition.get("kafka_topic").is_none() || o.partition.get("kafka_partition").is_none() {
        return Err(bad(
            "The partition for a sink connector offset must contain the keys 'kafka_topic' and 'kafka_partition'",
        ));
    }
    let topic = o
        .partition
        .get("kafka_topic")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("Kafka topic names must be valid strings"))?;
    let partition = json_i64(o.partition.get("kafka_partition"))
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p >= 0)
        .ok_or_else(|| bad("Partition values for sink connectors need to be integers"))?;
    if o.offset.is_null() {
        return Ok((topic.to_string(), partition, None));
    }
    let offset = json_i64(o.offset.get("kafka_offset"))
        .filter(|o| *o >= 0)
        .ok_or_else(|| bad("The offset for a sink connector should either be null or contain the key 'kafka_offset' with a whole number"))?;
    Ok((topic.to_string(), partition, Some(offset)))
}

fn kafka_error(brokers: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Kafka {
        brokers: brokers.to_string(),
        message: format!("{what}: {e}"),
    }
}

/// Blocking: the group's committed offsets on every partition of `topics`.
fn sink_offsets(
    brokers: &str,
    group: &str,
    topics: &[String],
) -> Result<Vec<ConnectorOffset>, Error> {
    let client = kafka::lag_client(brokers, group)
        .map_err(|e| kafka_error(brokers, "cannot create a consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = client
            .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
            .map_err(|e| kafka_error(brokers, &format!("metadata of {topic}"), e))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = client
        .committed_offsets(tpl, KAFKA_TIMEOUT)
        .map_err(|e| kafka_error(brokers, &format!("committed offsets of group {group}"), e))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(ConnectorOffset {
                partition: json!({"kafka_topic": e.topic(), "kafka_partition": e.partition()}),
                offset: json!({ "kafka_offset": o }),
            }),
            _ => None,
        })
        .collect())
}

/// Blocking: waits until `group` has no member. A stopped sink's static members
/// stay until their session times out; a member that stays longer belongs to a
/// sink running elsewhere.
fn wait_group_empty(brokers: &str, group: &str) -> Result<(), Error> {
    let client: BaseConsumer = kafka::probe_client(brokers)
        .map_err(|e| kafka_error(brokers, "cannot create a client", e))?;
    let deadline = std::time::Instant::now() + GROUP_EMPTY_TIMEOUT;
    loop {
        let members = client
            .fetch_group_list(Some(group), KAFKA_TIMEOUT)
            .map_err(|e| kafka_error(brokers, &format!("cannot describe group {group}"), e))?
            .groups()
            .iter()
            .map(|g| g.members().len())
            .sum::<usize>();
        if members == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Conflict(format!(
                "consumer group {group} still has {members} active member(s) after {}s; is the sink running on another worker?",
                GROUP_EMPTY_TIMEOUT.as_secs()
            )));
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "runs inside spawn_blocking (see `blocking`)"
        )]
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Blocking: commits the new offsets for `group`. A partition whose offset is
/// None goes back to its earliest record (what the sink does without a
/// committed offset: `auto.offset.reset=earliest`).
fn alter_sink_offsets(
    brokers: &str,
    group: &str,
    changes: &[SinkOffsetChange],
) -> Result<(), Error> {
    wait_group_empty(brokers, group)?;
    let client = kafka::lag_client(brokers, group)
        .map_err(|e| kafka_error(brokers, "cannot create a consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in changes {
        let offset = match offset {
            Some(o) => *o,
            None => {
                client
                    .fetch_watermarks(topic, *partition, KAFKA_TIMEOUT)
                    .map_err(|e| {
                        kafka_error(brokers, &format!("offsets of {topic}/{partition}"), e)
                    })?
                    .0
            }
        };
        tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))
            .map_err(|e| kafka_error(brokers, "bad offset", e))?;
    }
    client.commit(&tpl, CommitMode::Sync).map_err(|e| {
        kafka_error(
            brokers,
            &format!("cannot commit offsets for group {group}"),
            e,
        )
    })
}

/// Deletes the consumer group (an absent group is already reset).
async fn delete_group(brokers: &str, group: &str) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| kafka_error(brokers, "cannot create an admin client", e))?;
    let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
    let results = admin
        .delete_groups(&[group], &options)
        .await
        .map_err(|e| kafka_error(brokers, &format!("cannot delete group {group}"), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((_, RDKafkaErrorCode::NonEmptyGroup)) => {
                return Err(Error::Conflict(format!(
                    "consumer group {group} is not empty; is the sink running on another worker?"
                )));
            }
            Err((_, code)) => {
                return Err(kafka_error(
                    brokers,
                    &format!("cannot delete group {group}"),
                    code,
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: State, error: &str) -> StatusSnapshot {
        StatusSnapshot {
            state,
            files_finished: 1,
            files_failed: 0,
            records: 10,
            skipped: 0,
            bytes: 0,
            lag: 0,
            stalled: false,
            last_error: error.into(),
            halted: false,
        }
    }

    fn inner(target: TargetState) -> Inner {
        Inner {
            config: BTreeMap::new(),
            kind: Some(Kind::Sink),
            parsed: Err(String::new()),
            target,
            tasks: Vec::new(),
            restarting: false,
            ran: true,
            topics_reset_at: None,
            deleted: false,
        }
    }

    fn task(id: u32, state: State, error: &str) -> TaskView {
        TaskView {
            id,
            state,
            worker: None,
            status: snapshot(state, error),
        }
    }

    #[test]
    fn the_connector_state_comes_from_its_target_and_its_tasks() {
        let mut started = inner(TargetState::Started);
        started.parsed = Ok(Parsed {
            config: ConnectorConfig::parse(
                "k",
                &[
                    ("connector.class", "JdbcSinkConnector"),
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            )
            .expect("valid")
            .config,
            tasks: 2,
            secrets: Default::default(),
        });
        let failed = [task(0, State::Failed, "a"), task(1, State::Failed, "b")];
        assert_eq!(
            connector_state(&started, &failed),
            (State::Failed, "task 0: a; task 1: b".into())
        );
        let one_running = [task(0, State::Failed, "a"), task(1, State::Running, "")];
        assert_eq!(connector_state(&started, &one_running).0, State::Running);
        let waiting = [task(0, State::Unassigned, "no db")];
        assert_eq!(connector_state(&started, &waiting).0, State::Unassigned);
        let single = [task(0, State::Failed, "table refused")];
        assert_eq!(
            connector_state(&started, &single),
            (State::Failed, "table refused".into())
        );

        started.target = TargetState::Paused;
        assert_eq!(connector_state(&started, &failed).0, State::Paused);
        started.target = TargetState::Stopped;
        assert_eq!(connector_state(&started, &[]).0, State::Stopped);
        started.restarting = true;
        assert_eq!(connector_state(&started, &[]).0, State::Restarting);

        let mut invalid = inner(TargetState::Started);
        invalid.parsed = Err("option \"x\" is not supported".into());
        assert_eq!(
            connector_state(&invalid, &[]),
            (State::Failed, "option \"x\" is not supported".into())
        );
    }

    #[test]
    fn the_store_keeps_the_target_state_only_when_not_started() {
        let stored = vec![
            Stored {
                name: "a".into(),
                config: BTreeMap::new(),
                target_state: TargetState::Started,
            },
            Stored {
                name: "b".into(),
                config: BTreeMap::new(),
                target_state: TargetState::Paused,
            },
        ];
        let json = serde_json::to_value(&stored).expect("json");
        assert_eq!(
            json,
            json!([{"name": "a", "config": {}}, {"name": "b", "config": {}, "target_state": "PAUSED"}])
        );
        let back: Vec<Stored> = serde_json::from_value(json).expect("back");
        assert_eq!(back[0].target_state, TargetState::Started);
        assert_eq!(back[1].target_state, TargetState::Paused);
    }

    #[test]
    fn source_offsets_round_trip_through_the_state_json() {
        let mut state = json!({"sent": {"a.csv": [10, 5]}, "schema": {"keep": true}});
        assert_eq!(
            source_offsets(&state),
            vec![ConnectorOffset {
                partition: json!({"file": "a.csv"}),
                offset: json!({"size": 10, "mtime": 5}),
            }]
        );
        let add = parse_source_offset(&ConnectorOffset {
            partition: json!({"file": "b.csv"}),
            offset: json!({"size": "7"}),
        })
        .expect("valid");
        assert_eq!(add, ("b.csv".to_string(), Some(json!([7, null]))));
        let remove = parse_source_offset(&ConnectorOffset {
            partition: json!({"file": "a.csv"}),
            offset: Json::Null,
        })
        .expect("valid");
        for (file, offset) in [add, remove] {
            let sent = sent_map(&mut state);
            match offset {
                Some(o) => sent.insert(file, o),
                None => sent.remove(&file),
            };
        }
        assert_eq!(
            state,
            json!({"sent": {"b.csv": [7, null]}, "schema": {"keep": true}})
        );
        assert!(
            parse_source_offset(&ConnectorOffset {
                partition: json!({"name": "x"}),
                offset: Json::Null,
            })
            .is_err()
        );
    }

    #[test]
    fn sink_offsets_accept_numbers_and_text() {
        let o = ConnectorOffset {
            partition: json!({"kafka_topic": "t", "kafka_partition": "2"}),
            offset: json!({"kafka_offset": 100}),
        };
        assert_eq!(
            parse_sink_offset(&o).expect("valid"),
            ("t".into(), 2, Some(100))
        );
        let reset = ConnectorOffset {
            partition: json!({"kafka_topic": "t", "kafka_partition": 0}),
            offset: Json::Null,
        };
        assert_eq!(
            parse_sink_offset(&reset).expect("valid"),
            ("t".into(), 0, None)
        );
        let bad = ConnectorOffset {
            partition: json!({"kafka_topic": "t"}),
            offset: Json::Null,
        };
        assert!(parse_sink_offset(&bad).is_err());
    }
}
