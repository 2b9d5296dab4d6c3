//! Distributed mode: several connect-managers started with the same
//! `--group-id` form one cluster, coordinated by Kafka alone, as Kafka
//! Connect's workers are.
//!
//! # Where the cluster's state lives
//! - Connector configs, target states and restart requests: the config topic
//!   (one partition, compacted; `records` gives the shapes). Every worker reads
//!   it from the start and applies each record in log order to its registry,
//!   so all workers hold the same connectors. An API write goes to the topic
//!   first and answers once this worker has applied its own record: a write to
//!   any worker is then seen by all, and a read after a write sees it.
//! - Task status: the status topic. Each worker publishes its tasks' states
//!   and counters when they change; every worker reads the whole topic, so any
//!   worker answers a status request for every task, naming the worker that
//!   runs it.
//! - Source offsets: the offset topic (see `source::state`).
//!
//! # Who runs which task
//! The workers join one Kafka consumer group (`--group-id`) subscribed to the
//! assignment topic, whose partitions are task slots. Kafka's group protocol
//! hands the slots out (the round-robin assignor: slot `p` goes to member `p
//! mod n`) and hands them out again when a worker joins, or leaves, or stops
//! heartbeating for the session timeout. Every worker numbers the tasks of all
//! running connectors the same way (connectors by name, then task id), and
//! runs task `j` when it holds slot `j mod slots`. Nothing but the group
//! decides; the numbering only needs the config topic, which all workers share.
//!
//! While the group rebalances, a task may briefly run on two workers. That
//! harms nothing: sink tasks are members of the sink's own consumer group,
//! which gives a partition to one of them, and source tasks claim each file
//! with an atomic rename on the SFTP server before reading it.

pub(crate) mod records;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use etl_service::Shutdown;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use tokio::sync::{mpsc, watch};

use crate::{Error, kafka, registry::Registry};
use records::{ConfigRecord, TaskStatusRecord};

/// Task slots: partitions of the assignment topic. 60 is divisible by 1–6
/// workers, so a small cluster's tasks spread evenly. A worker beyond the
/// 60th gets no slot, and stays NOT_SERVING (see `Cluster::not_ready`).
const SLOTS: i32 = 60;
/// Kafka Connect's defaults for the status and offset topics' partitions.
const STATUS_PARTITIONS: i32 = 5;
pub(crate) const OFFSET_PARTITIONS: i32 = 25;
/// How long an API write waits for the cluster (the config topic read to its
/// end, its own record applied) before it answers 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// A worker that stops heartbeating leaves the worker group after this; its
/// tasks then move. The broker's default minimum.
const SESSION_TIMEOUT_MS: &str = "6000";
/// Without any slot for this long, a worker has lost its place in the group:
/// well above a session (6 s), which bounds a rebalance waiting for a dead
/// member, so a slow rebalance does not stop every task.
const LOST_AFTER: Duration = Duration::from_secs(20);
/// How often the worker group's members are listed (besides every rebalance).
const LIVE_EVERY: Duration = Duration::from_secs(3);

/// The topics and group of one cluster (`--group-id`, `--*-storage-topic`).
#[derive(Clone, Debug)]
pub(crate) struct ClusterConfig {
    pub(crate) group_id: String,
    pub(crate) config_topic: String,
    pub(crate) status_topic: String,
    pub(crate) offset_topic: String,
    pub(crate) assignment_topic: String,
}

/// What a task needs to know about the cluster it runs in (None in standalone mode).
#[derive(Clone, Debug)]
pub(crate) struct TaskCluster {
    /// This run of the worker: its stable id (from its host name and data
    /// directory) and a suffix new at every start, so a restarted worker's
    /// previous run is told from the live one. Names the worker's file claims
    /// and its member of the worker group (`client.id`).
    pub(crate) worker: String,
    /// The ids of the workers in the worker group now (Kafka's view of who is
    /// alive), updated on every rebalance. A claim held by a worker not in
    /// this set belongs to a dead worker and may be taken over.
    pub(crate) live: watch::Receiver<BTreeSet<String>>,
    /// Kafka bootstrap servers.
    pub(crate) brokers: String,
    /// Kafka Connect's `offset.storage.topic`: where the source keeps its
    /// offsets (files sent, pinned schema) so every worker sees them.
    pub(crate) offset_topic: String,
}

/// The slots this worker holds, out of how many.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slots {
    pub(crate) total: i32,
    pub(crate) mine: BTreeSet<i32>,
}

impl Slots {
    /// Whether the task numbered `index` (see the module doc) runs here.
    pub(crate) fn owns(&self, index: usize) -> bool {
        self.total > 0 && self.mine.contains(&((index % self.total as usize) as i32))
    }
}

/// One record of the config topic, on its way to the applier.
struct Read {
    offset: i64,
    key: String,
    value: Option<Vec<u8>>,
}

/// This worker's membership in a cluster.
pub(crate) struct Cluster {
    config: ClusterConfig,
    brokers: String,
    worker: String,
    producer: FutureProducer,
    /// The config topic's next offset this worker has applied.
    applied: watch::Sender<i64>,
    /// The config topic was read to the end it had when this worker started.
    ready: watch::Sender<bool>,
    live: watch::Sender<BTreeSet<String>>,
    slots: watch::Sender<Slots>,
    statuses: Mutex<HashMap<(String, u32), TaskStatusRecord>>,
    rest_id: OnceLock<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    pub(crate) fn new(config: ClusterConfig, brokers: &str, worker: String) -> Result<Self, Error> {
        let producer = kafka::producer(brokers).map_err(|e| Error::Kafka {
            brokers: brokers.to_string(),
            message: format!("cannot create the cluster's producer: {e}"),
        })?;
        Ok(Self {
            config,
            brokers: brokers.to_string(),
            worker,
            producer,
            applied: watch::Sender::new(0),
            ready: watch::Sender::new(false),
            live: watch::Sender::new(BTreeSet::new()),
            slots: watch::Sender::new(Slots::default()),
            statuses: Mutex::new(HashMap::new()),
            rest_id: OnceLock::new(),
        })
    }

    /// Names this worker in published statuses: its REST `host:port`.
    pub(crate) fn set_rest_id(&self, id: &str) {
        let _ = self.rest_id.set(id.to_string());
    }

    pub(crate) fn rest_id(&self) -> String {
        self.rest_id.get().cloned().unwrap_or_default()
    }

    /// Why this worker cannot serve yet, if it cannot: it has not read the
    /// config topic (it knows no connector), or the worker group has not
    /// given it its first share of the task slots. Until the second, a worker
    /// that joined first holds every slot, starts the tasks of connectors
    /// applied meanwhile, and hands half of them over a few seconds later:
    /// records arriving then wait for the handover (a 100k burst sent right
    /// after `etlctl up --workers 2` took 4.4 s instead of 1.9). So the
    /// health stays NOT_SERVING until both are done.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if !*self.ready.borrow() {
            Some("reading the config topic")
        } else if self.slots.borrow().total == 0 {
            Some("waiting for the worker group's first assignment")
        } else {
            None
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "group {} (config topic {} at {})",
            self.config.group_id, self.config.config_topic, self.brokers
        )
    }

    pub(crate) fn offset_topic(&self) -> &str {
        &self.config.offset_topic
    }

    pub(crate) fn task_cluster(&self) -> TaskCluster {
        TaskCluster {
            worker: self.worker.clone(),
            live: self.live.subscribe(),
            brokers: self.brokers.clone(),
            offset_topic: self.config.offset_topic.clone(),
        }
    }

    pub(crate) fn slots(&self) -> Slots {
        self.slots.borrow().clone()
    }

    /// The status another worker (or this one) last published for a task,
    /// unless the worker group's member list says that worker is gone. A
    /// broker that does not list a group's members (tansu answers
    /// DescribeGroups without them) leaves the list empty: the records are
    /// then shown as they are, and a dead worker's tasks show its last word
    /// until their new worker publishes.
    pub(crate) fn remote_status(&self, name: &str, task: u32) -> Option<TaskStatusRecord> {
        let record = lock(&self.statuses)
            .get(&(name.to_string(), task))
            .cloned()?;
        let live = self.live.borrow();
        (live.is_empty() || live.contains(&record.worker)).then_some(record)
    }

    /// Joins the cluster in the background (retrying while Kafka is away):
    /// creates the topics, reads the config topic and applies it to
    /// `registry`, tails the status topic, joins the worker group, publishes
    /// this worker's task statuses, and keeps the running tasks matching the
    /// slots this worker holds.
    pub(crate) fn start(self: &Arc<Self>, registry: Arc<Registry>, shutdown: Shutdown) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let what = format!("the cluster's topics at {}", cluster.brokers);
            let created = etl_service::retry(&what, &shutdown, || cluster.create_topics()).await;
            if created.is_none() {
                return;
            }
            let (tx, rx) = mpsc::channel::<Read>(1024);
            let initial_end = Arc::new(OnceLock::new());
            spawn_thread("config-topic", {
                let (cluster, shutdown, end) =
                    (cluster.clone(), shutdown.clone(), initial_end.clone());
                move || cluster.tail_config(tx, end, shutdown)
            });
            spawn_thread("status-topic", {
                let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
                move || cluster.tail_status(shutdown)
            });
            spawn_thread("worker-group", {
                let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
                move || cluster.join_group(shutdown)
            });
            tokio::spawn(
                cluster
                    .clone()
                    .publish_statuses(registry.clone(), shutdown.clone()),
            );
            tokio::spawn(
                cluster
                    .clone()
                    .reconcile(registry.clone(), shutdown.clone()),
            );
            cluster.apply(rx, initial_end, registry).await;
        });
    }

    async fn create_topics(&self) -> Result<(), String> {
        let compact = Some("compact");
        kafka::ensure_topic_with(&self.brokers, &self.config.config_topic, 1, compact).await?;
        kafka::ensure_topic_with(
            &self.brokers,
            &self.config.status_topic,
            STATUS_PARTITIONS,
            compact,
        )
        .await?;
        kafka::ensure_topic_with(
            &self.brokers,
            &self.config.offset_topic,
            OFFSET_PARTITIONS,
            compact,
        )
        .await?;
        kafka::ensure_topic_with(&self.brokers, &self.config.assignment_topic, SLOTS, None).await
    }

    /// Applies the config topic's records in order; ready once the end the
    /// topic had at start is reached.
    async fn apply(
        &self,
        mut rx: mpsc::Receiver<Read>,
        initial_end: Arc<OnceLock<i64>>,
        registry: Arc<Registry>,
    ) {
        let check_ready = |applied: i64| {
            if !*self.ready.borrow()
                && let Some(&end) = initial_end.get()
                && applied >= end
            {
                tracing::info!(
                    group = %self.config.group_id,
                    topic = %self.config.config_topic,
                    records = end,
                    "cluster config read; joining the work"
                );
                self.ready.send_replace(true);
            }
        };
        loop {
            // The tail sets the end before its first record; an empty topic has
            // no record to wait for.
            check_ready(*self.applied.borrow());
            let read = tokio::select! {
                r = rx.recv() => r,
                _ = tokio::time::sleep(Duration::from_millis(100)), if !*self.ready.borrow() => continue,
            };
            let Some(read) = read else { return };
            match ConfigRecord::decode(&read.key, read.value.as_deref()) {
                Ok(Some(record)) => registry.apply(record).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    topic = %self.config.config_topic,
                    offset = read.offset,
                    error = %e,
                    "config record skipped"
                ),
            }
            self.applied.send_replace(read.offset + 1);
            check_ready(read.offset + 1);
        }
    }

    /// Writes `records` to the config topic in order, then waits until this
    /// worker applied the last one, so the caller's next read sees them.
    pub(crate) async fn write(&self, records: Vec<ConfigRecord>) -> Result<(), Error> {
        let unavailable = |why: String| Error::Unavailable(why);
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(WRITE_TIMEOUT, ready.wait_for(|r| *r))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "this worker has not read the cluster's config topic {} at {} yet; try again when its health is SERVING",
                    self.config.config_topic, self.brokers
                ))
            })?
            .map_err(|_| unavailable("the worker is shutting down".into()))?;
        let mut last = -1;
        for record in records {
            let (key, value) = record.encode();
            let mut r = FutureRecord::<String, Vec<u8>>::to(&self.config.config_topic)
                .key(&key)
                .partition(0);
            if let Some(v) = value.as_ref() {
                r = r.payload(v);
            }
            let delivery = self
                .producer
                .send(r, WRITE_TIMEOUT)
                .await
                .map_err(|(e, _)| Error::Kafka {
                    brokers: self.brokers.clone(),
                    message: format!("cannot write to {}: {e}", self.config.config_topic),
                })?;
            last = delivery.offset;
        }
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(WRITE_TIMEOUT, applied.wait_for(|a| *a > last))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "the change was written to {} but this worker has not read it back within {}s",
                    self.config.config_topic,
                    WRITE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|_| unavailable("the worker is shutting down".into()))?;
        Ok(())
    }

    /// Writes tombstones for a deleted connector's task statuses.
    pub(crate) async fn forget_statuses(&self, name: &str, tasks: u32) {
        for id in 0..tasks {
            let key = records::task_status_key(name, id);
            let r = FutureRecord::<String, Vec<u8>>::to(&self.config.status_topic).key(&key);
            if let Err((e, _)) = self.producer.send(r, WRITE_TIMEOUT).await {
                tracing::debug!(error = %e, %key, "cannot forget a task status");
            }
        }
        lock(&self.statuses).retain(|(n, _), _| n != name);
    }

    /// Blocking: reads the config topic from its start for as long as the
    /// worker runs, sending each record to the applier.
    fn tail_config(&self, tx: mpsc::Sender<Read>, end: Arc<OnceLock<i64>>, shutdown: Shutdown) {
        let topic = self.config.config_topic.clone();
        let Some(consumer) = self.tail(&topic, &shutdown) else {
            return;
        };
        loop {
            if shutdown.is_triggered() {
                return;
            }
            match consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5)) {
                Ok((_, high)) => {
                    let _ = end.set(high);
                    break;
                }
                Err(e) => {
                    tracing::debug!(%topic, error = %e, "cannot read the config topic's end yet");
                    pause(Duration::from_millis(500));
                }
            }
        }
        while !shutdown.is_triggered() {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let read = Read {
                        offset: m.offset(),
                        key: m
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .unwrap_or_default(),
                        value: m.payload().map(<[u8]>::to_vec),
                    };
                    if tx.blocking_send(read).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(%topic, error = %e, "config topic read failed; retrying");
                    pause(Duration::from_millis(200));
                }
                None => {}
            }
        }
    }

    /// Blocking: keeps `statuses` at the last record per task of the status topic.
    fn tail_status(&self, shutdown: Shutdown) {
        let topic = self.config.status_topic.clone();
        let Some(consumer) = self.tail(&topic, &shutdown) else {
            return;
        };
        while !shutdown.is_triggered() {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let Some((name, task)) = m
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(records::parse_task_status_key)
                    else {
                        continue;
                    };
                    let mut statuses = lock(&self.statuses);
                    match m.payload().map(serde_json::from_slice::<TaskStatusRecord>) {
                        Some(Ok(record)) => {
                            statuses.insert((name, task), record);
                        }
                        None => {
                            statuses.remove(&(name, task));
                        }
                        Some(Err(e)) => {
                            tracing::debug!(%topic, error = %e, "status record skipped")
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(%topic, error = %e, "status topic read failed; retrying");
                    pause(Duration::from_millis(200));
                }
                None => {}
            }
        }
    }

    /// A group-less consumer assigned to every partition of `topic` from the
    /// start, made once the topic's metadata answers.
    fn tail(&self, topic: &str, shutdown: &Shutdown) -> Option<BaseConsumer> {
        while !shutdown.is_triggered() {
            match tail_consumer(&self.brokers, topic) {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::debug!(%topic, error = %e, "cannot read the topic yet");
                    pause(Duration::from_millis(500));
                }
            }
        }
        None
    }

    /// Blocking: this worker's membership in the worker group, for as long as
    /// it runs. Publishes the slots it holds after every rebalance and the
    /// group's members (the live workers).
    fn join_group(&self, shutdown: Shutdown) {
        let group = self.config.group_id.clone();
        let topic = self.config.assignment_topic.clone();
        let consumer: BaseConsumer = match ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &group)
            .set("client.id", &self.worker)
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            // A member whose metadata does not list the assignment topic does
            // not join the group until its next metadata refresh (5 minutes by
            // default). CI found a test cluster's three sink tasks on two of
            // its three workers, all three having logged "Subscribed topic
            // not available".
            // `create_topics` waits until the broker lists the topic; this
            // bounds what is left (another broker of a cluster lagging).
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("log.connection.close", "false")
            .create()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%group, error = %e, "cannot create the worker group's consumer; this worker runs no task");
                return;
            }
        };
        if let Err(e) = consumer.subscribe(&[&topic]) {
            tracing::error!(%group, %topic, error = %e, "cannot join the worker group; this worker runs no task");
            return;
        }
        let mut listed = Instant::now() - LIVE_EVERY;
        let mut total = 0;
        let mut empty_since: Option<Instant> = None;
        while !shutdown.is_triggered() {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                tracing::debug!(%group, error = %e, "worker group poll");
            }
            let mine: BTreeSet<i32> = consumer
                .assignment()
                .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            // An empty assignment is the middle of a rebalance (the eager
            // protocol revokes everything first): keep the tasks until the
            // new assignment says otherwise. Empty for longer than a session,
            // this worker is out of the group (a broker it cannot reach, a
            // stall): the others have its slots by now, so it stops its tasks.
            if mine.is_empty() {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= LOST_AFTER && !self.slots.borrow().mine.is_empty() {
                    tracing::warn!(%group, "no task slot for longer than a session: out of the worker group; stopping this worker's tasks");
                    self.slots.send_replace(Slots { total, mine });
                }
            } else {
                empty_since = None;
                if mine != self.slots.borrow().mine {
                    if total == 0 {
                        total = partitions(&consumer, &topic).unwrap_or(SLOTS);
                    }
                    tracing::info!(%group, slots = mine.len(), of = total, "worker group assignment");
                    self.slots.send_replace(Slots { total, mine });
                    listed = Instant::now() - LIVE_EVERY;
                }
            }
            if listed.elapsed() >= LIVE_EVERY {
                listed = Instant::now();
                match consumer.fetch_group_list(Some(group.as_str()), Duration::from_secs(3)) {
                    Ok(list) => {
                        let live: BTreeSet<String> = list
                            .groups()
                            .iter()
                            .flat_map(|g| g.members())
                            .map(|m| m.client_id().to_string())
                            .collect();
                        self.live.send_if_modified(|old| {
                            let changed = *old != live && !live.is_empty();
                            if changed {
                                tracing::info!(%group, workers = ?live, "live workers");
                                *old = live;
                            }
                            changed
                        });
                    }
                    Err(e) => tracing::debug!(%group, error = %e, "cannot list the worker group"),
                }
            }
        }
        consumer.unsubscribe();
    }

    /// Publishes the status of the tasks running here whenever it changes,
    /// and the last word on a task that stopped running here (PAUSED or
    /// UNASSIGNED, see `Registry::idle_state`), as Kafka Connect's workers do.
    /// Without that last word every worker kept showing a task RUNNING on the
    /// worker it had left until its new worker spoke, and a paused one
    /// RUNNING in the topic. Records cross: the old worker's UNASSIGNED may
    /// land after the new worker's RUNNING. So the old worker speaks only
    /// while the topic's last word on the task is still its own, and a worker
    /// running a task says it again over another worker's word that does not
    /// say RUNNING (see `must_restate`).
    async fn publish_statuses(self: Arc<Self>, registry: Arc<Registry>, shutdown: Shutdown) {
        let mut last: HashMap<(String, u32), TaskStatusRecord> = HashMap::new();
        let mut generation = 0u64;
        loop {
            if !shutdown.sleep(Duration::from_millis(500)).await {
                return;
            }
            let worker_id = self.rest_id();
            let running = registry.local_statuses();
            let here: BTreeSet<(String, u32)> = running
                .iter()
                .map(|(name, task, ..)| (name.clone(), *task))
                .collect();
            for (name, task, state, metrics) in running {
                let trace = (state == "FAILED" && !metrics.last_error.is_empty())
                    .then(|| metrics.last_error.clone());
                let mut record = TaskStatusRecord {
                    state: state.to_string(),
                    trace,
                    worker_id: worker_id.clone(),
                    generation,
                    worker: self.worker.clone(),
                    metrics,
                };
                let key = (name, task);
                if let Some(prev) = last.get(&key) {
                    record.generation = prev.generation;
                    if *prev == record && !self.last_word_needs_mine(&key) {
                        continue;
                    }
                }
                generation += 1;
                record.generation = generation;
                if self.send_status(&key, &record).await {
                    last.insert(key, record);
                }
            }
            let left: Vec<(String, u32)> = last
                .keys()
                .filter(|key| !here.contains(*key))
                .cloned()
                .collect();
            for key in left {
                let Some(prev) = last.remove(&key) else {
                    continue;
                };
                let Some(state) = registry.idle_state(&key.0, key.1) else {
                    continue;
                };
                if self.last_word_is_mine(&key) != Some(true) {
                    continue;
                }
                generation += 1;
                let record = TaskStatusRecord {
                    state: state.to_string(),
                    trace: None,
                    worker_id: worker_id.clone(),
                    generation,
                    worker: self.worker.clone(),
                    metrics: prev.metrics,
                };
                self.send_status(&key, &record).await;
            }
        }
    }

    /// Whether the status topic's last record for a task, as read so far, is
    /// this worker's (None: no record read).
    fn last_word_is_mine(&self, key: &(String, u32)) -> Option<bool> {
        lock(&self.statuses)
            .get(key)
            .map(|r| r.worker == self.worker)
    }

    /// Whether this worker, running a task, must write its status again over
    /// the topic's last record on it (`must_restate`).
    fn last_word_needs_mine(&self, key: &(String, u32)) -> bool {
        let statuses = lock(&self.statuses);
        statuses
            .get(key)
            .is_some_and(|r| must_restate(r, &self.worker, &self.live.borrow()))
    }

    /// Writes one task status record; false when it could not be written.
    async fn send_status(&self, key: &(String, u32), record: &TaskStatusRecord) -> bool {
        let Ok(value) = serde_json::to_vec(record) else {
            return false;
        };
        let k = records::task_status_key(&key.0, key.1);
        let r = FutureRecord::to(&self.config.status_topic)
            .key(&k)
            .payload(&value);
        match self.producer.send(r, Duration::from_secs(5)).await {
            Ok(_) => true,
            Err((e, _)) => {
                tracing::debug!(error = %e, key = %k, "cannot publish a task status");
                false
            }
        }
    }

    /// Keeps the running tasks matching the slots: after every rebalance, and
    /// every few seconds (a config change renumbers the tasks).
    async fn reconcile(self: Arc<Self>, registry: Arc<Registry>, shutdown: Shutdown) {
        let mut slots = self.slots.subscribe();
        let mut ready = self.ready.subscribe();
        if ready.wait_for(|r| *r).await.is_err() {
            return;
        }
        loop {
            registry.reconcile().await;
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = slots.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_string()).spawn(f) {
        tracing::error!(thread = name, error = %e, "cannot start a cluster thread");
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the cluster's Kafka readers are blocking threads of their own"
)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Option<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let n = metadata.topics().first()?.partitions().len();
    (n > 0).then_some(n as i32)
}

fn tail_consumer(brokers: &str, topic: &str) -> Result<BaseConsumer, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // librdkafka wants a group even for assign(); it is never joined and
        // nothing is committed: every start reads from the start.
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "50")
        .set("log.connection.close", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let n = partitions(&consumer, topic)
        .ok_or_else(|| format!("topic {topic} has no partitions yet"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    Ok(consumer)
}

/// Whether `me`, running a task, writes its status again over `last`, the
/// topic's last record on the task: when that record is another worker's and
/// says the task is not running there (a PAUSED or UNASSIGNED that crossed
/// this worker's RUNNING), or comes from a worker the group no longer lists.
/// Two workers that both run a task for a moment, during a handover, both say
/// RUNNING and leave each other's record alone: rewriting over a RUNNING too,
/// each wrote over the other every half second until the old one stopped.
/// The old one's last word, when it stops, is then left to `publish_statuses`.
fn must_restate(last: &TaskStatusRecord, me: &str, live: &BTreeSet<String>) -> bool {
    last.worker != me
        && (last.state != "RUNNING" || (!live.is_empty() && !live.contains(&last.worker)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_task_is_restated_over_a_crossed_last_word_not_over_a_running_peer() {
        let record = |worker: &str, state: &str| TaskStatusRecord {
            state: state.into(),
            trace: None,
            worker_id: format!("{worker}:8083"),
            generation: 1,
            worker: worker.into(),
            metrics: Default::default(),
        };
        let none = BTreeSet::new();
        let both = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let only_b = BTreeSet::from(["b".to_string()]);
        // Another worker's last word crossed this one's RUNNING.
        assert!(must_restate(&record("a", "UNASSIGNED"), "b", &none));
        assert!(must_restate(&record("a", "PAUSED"), "b", &both));
        // Both run it for a moment: no ping-pong, whether or not the broker
        // lists the group's members.
        assert!(!must_restate(&record("a", "RUNNING"), "b", &none));
        assert!(!must_restate(&record("a", "RUNNING"), "b", &both));
        // A RUNNING left by a worker that is gone.
        assert!(must_restate(&record("a", "RUNNING"), "b", &only_b));
        // Its own last word needs nothing more.
        assert!(!must_restate(&record("b", "UNASSIGNED"), "b", &none));
        assert!(!must_restate(&record("b", "RUNNING"), "b", &only_b));
    }

    #[test]
    fn serves_once_it_read_the_configs_and_holds_a_share_of_the_slots() {
        let config = ClusterConfig {
            group_id: "g".into(),
            config_topic: "g-configs".into(),
            status_topic: "g-status".into(),
            offset_topic: "g-offsets".into(),
            assignment_topic: "g-assignments".into(),
        };
        let c = Cluster::new(config, "127.0.0.1:9", "w".into()).expect("cluster");
        assert_eq!(c.not_ready(), Some("reading the config topic"));
        c.ready.send_replace(true);
        // Joined the group, no assignment yet: the first worker may hold
        // every slot and would start tasks that move away seconds later.
        assert_eq!(
            c.not_ready(),
            Some("waiting for the worker group's first assignment")
        );
        c.slots.send_replace(Slots {
            total: SLOTS,
            mine: BTreeSet::from([0, 2]),
        });
        assert_eq!(c.not_ready(), None);
        // A later rebalance (slots revoked meanwhile) does not make it a
        // worker that never joined.
        c.slots.send_replace(Slots {
            total: SLOTS,
            mine: BTreeSet::new(),
        });
        assert_eq!(c.not_ready(), None);
    }
}
