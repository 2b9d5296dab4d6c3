//! The sink connector: consumes the topics, and writes each batch of records
//! to Postgres in one transaction before committing the batch's offsets.
//!
//! Order of a batch: gather up to `batch.size` records (stopping once the
//! topic is quiet for a moment), decode them, de-duplicate by `(file, row)`,
//! write (see [`crate::postgres`]), commit the transaction, then commit the
//! Kafka offsets. A crash anywhere before the offset commit replays the batch,
//! which the `ON CONFLICT` write makes harmless.
//!
//! A record that cannot be decoded is never committed past silently: with
//! `errors.tolerance=none` (the default) the rows before it are written and
//! committed, then the task stops as FAILED naming the topic, partition, offset
//! and reason, and the record stays in Kafka. With `errors.tolerance=all` it
//! goes to the dead letter queue (acknowledged before its offset is
//! committed), or is counted as skipped when there is none.
//!
//! Keys and modes are Kafka Connect's (see [`config`]): `insert.mode` upsert,
//! insert or update, `pk.mode` record_key (ours, the default: the lineage
//! columns), kafka, record_value or none. `fields.whitelist` drops value
//! fields, `quote.sql.identifiers=never` folds names to lower case, and with
//! `delete.enabled` a record without a value deletes its row. A write that
//! Postgres refuses is retried (`max.retries`, `retry.backoff.ms`; unset:
//! until it succeeds), then the task stops FAILED with the batch uncommitted.
//!
//! Several sinks may read one topic: each is its own consumer group
//! (`consumer.override.group.id`, default `connect-<name>`), so each sees
//! every record and commits its own offsets.
//!
//! Records are taken in offset order per partition, and a jump forward is
//! fetched again before anything past it counts ([`gaps`]): tansu's memory
//! engine can skip a batch that is not stored yet, or the rest of a producer
//! batch a consumer resumed inside; a gap the broker serves again with the
//! records below it (compaction, transaction markers on Apache Kafka) is real
//! and accepted.
//!
//! The consumer is a *static* group member (`group.instance.id`, derived from
//! the worker's data directory): a sink restarted after a crash takes its
//! partitions back at once instead of waiting for the dead member's session
//! to expire, and a clean stop does not make the rest of the group rebalance.

pub(crate) mod config;
mod gaps;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etl_core::{Field, Schema, Value, envelope};
use etl_service::{Backoff, Shutdown, retry};
use etl_telemetry::names;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};
use tracing::{Instrument, Span};

pub(crate) use config::SinkConfig;
use config::{DeadLetters, PkMode, RetryPolicy, Tolerance};
use gaps::{GapGuard, Verdict};

use crate::{
    connector::TaskContext,
    kafka::{self, Rebalances},
    postgres::{self, Change, SinkRow, TableCache, WriteError, WriteSpec},
    status::{State, Status},
};

/// Gathering stops once no record arrived for this long. Short: a file's
/// records arrive within a few fetches (`fetch.wait.max.ms` is 10 ms), and every
/// millisecond here is latency for a file arriving alone; under a burst the
/// batch fills to `batch.size` first.
const GATHER_IDLE: Duration = Duration::from_millis(15);
/// How often partitions that delivered nothing are checked for records that
/// wait ([`gaps::GapGuard::quiet`]): a stall of that kind lasts a few of these.
const QUIET_PROBE_EVERY: Duration = Duration::from_secs(1);

/// A decoded record and where it came from.
struct Incoming {
    topic: Arc<str>,
    change: Change,
    traceparent: Arc<str>,
}

/// What the last record decoded had: the shape of its schema, and its topic,
/// file, traceparent and trace id. Consecutive records of a file share them:
/// one `Arc` each instead of their text allocated and freed per record.
#[derive(Default)]
struct Last {
    shape: Option<Shape>,
    topic: Option<Arc<str>>,
    file: Option<Arc<str>>,
    traceparent: Option<Arc<str>>,
    trace_id: Option<Arc<str>>,
}

/// `s` as the `Arc` in `last` when it is the same text; else a new one, kept there.
fn shared(last: &mut Option<Arc<str>>, s: &str) -> Arc<str> {
    match last {
        Some(a) if **a == *s => a.clone(),
        _ => last.insert(Arc::from(s)).clone(),
    }
}

/// Why the writer stopped before its batches ran out.
enum Stop {
    Shutdown,
    /// Retries are used up: the task halted (FAILED until restarted).
    Halted,
}

/// Counts the failures of one step (connecting, writing a batch) against its
/// [`RetryPolicy`]: Kafka Connect's `max.retries`/`retry.backoff.ms` and
/// `connection.attempts`/`connection.backoff.ms`. Unset, the step is retried
/// until it succeeds with the service's backoff, as every dependency is.
struct Attempts {
    policy: RetryPolicy,
    backoff: Backoff,
    failed: u32,
}

impl Attempts {
    fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            backoff: Backoff::default(),
            failed: 0,
        }
    }

    /// After a failure: how long to wait before the next attempt, or None once
    /// the policy's retries are used up.
    fn after_failure(&mut self) -> Option<Duration> {
        self.failed += 1;
        if self.policy.max.is_some_and(|max| self.failed > max) {
            return None;
        }
        Some(
            self.policy
                .fixed
                .unwrap_or_else(|| self.backoff.next_delay()),
        )
    }

    /// Loud on the first failure and every tenth, quiet in between: a
    /// database that is restarting is normal.
    fn loud(&self) -> bool {
        self.failed == 1 || self.failed.is_multiple_of(10)
    }
}

/// One gathered batch: rows per topic, and the offsets to commit after them.
#[derive(Default)]
struct Batch {
    rows: Vec<Incoming>,
    /// (topic, partition) → highest offset seen.
    offsets: BTreeMap<(String, i32), i64>,
    skipped: u64,
    /// Value bytes of the decoded records.
    bytes: u64,
}

/// A record that did not decode, and where it is.
struct BadRecord {
    topic: String,
    partition: i32,
    offset: i64,
    reason: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record at topic {} partition {} offset {} cannot be decoded: {}",
            self.topic, self.partition, self.offset, self.reason
        )
    }
}

/// What gathering a record did to the batch.
enum Gathered {
    Added,
    /// Tolerated (dead-lettered or skipped): its offset counts.
    Tolerated,
    /// errors.tolerance=none: the batch ends before this record and the task stops.
    Stop(BadRecord),
}

pub(crate) async fn run(config: SinkConfig, ctx: TaskContext) {
    let span = tracing::info_span!("sink", connector = %ctx.name);
    async move {
        // A consumer that hit a fatal error (e.g. fenced after the broker came back
        // and the group reloaded) is never usable again: start over with a new one.
        // Its uncommitted records are read again; the upsert makes that harmless.
        let mut backoff = Backoff::default();
        loop {
            let once = ctx.shutdown.child();
            let ended = run_inner(&config, &ctx, &once).await;
            once.trigger();
            match ended {
                Ended::Stopped => return,
                Ended::Fatal(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, restart_in_ms = delay.as_millis() as u64, "Kafka consumer failed for good; starting a new one");
                    ctx.status.waiting(format!("Kafka consumer failed ({e}); starting a new one"));
                    if !ctx.shutdown.sleep(delay).await {
                        return;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// How one life of the sink's consumer ended.
enum Ended {
    /// Shutdown, a task that stopped for good (FAILED), or a setup step gave up.
    Stopped,
    /// The consumer reported a fatal error.
    Fatal(String),
}

async fn run_inner(config: &SinkConfig, ctx: &TaskContext, shutdown: &Shutdown) -> Ended {
    let config = config.clone();
    let ctx_name = ctx.name.clone();
    let brokers = ctx.brokers.clone();
    let status = ctx.status.clone();
    let instance = ctx.instance.clone();
    let shutdown = shutdown.clone();
    status.set_state(State::Unassigned);
    // Standalone, the task is a static member: a restart of the worker takes
    // its partitions back at once. Distributed, a task moves between workers,
    // and a static member left behind would hold its partitions until its
    // session ends (a broker that never ends it, as tansu, holds them for
    // good): a dynamic member leaves the group when it stops, and the
    // partitions move at once.
    let instance_id = ctx
        .cluster
        .is_none()
        .then(|| format!("{}-{instance}-0", config.group_id));
    let consumer = match kafka::consumer(&brokers, &config.group_id, instance_id.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            status.fail(format!("cannot create Kafka consumer for {brokers}: {e}"));
            return Ended::Stopped;
        }
    };
    // A subscription to a topic that does not exist yet is only noticed at the
    // next metadata refresh (minutes), and neither tansu nor a Kafka with
    // auto-create off creates it: make sure it exists, so start order never matters.
    // (A pattern's topics are whatever exists: nothing to create.)
    for topic in &config.topics {
        let what = format!("Kafka topic {topic} at {brokers}");
        let created = retry(&what, &shutdown, || {
            kafka::ensure_topic(&brokers, topic, kafka::DEFAULT_PARTITIONS)
        })
        .await;
        if created.is_none() {
            return Ended::Stopped;
        }
    }
    let subscription = config.subscription();
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        status.fail(format!("cannot subscribe to {topics:?}: {e}"));
        return Ended::Stopped;
    }
    let dead_letters = match &config.dead_letters {
        Some(dlq) => {
            let what = format!("Kafka topic {} at {brokers}", dlq.topic);
            let created = retry(&what, &shutdown, || {
                kafka::ensure_topic(&brokers, &dlq.topic, 1)
            })
            .await;
            if created.is_none() {
                return Ended::Stopped;
            }
            match kafka::producer(&brokers) {
                Ok(p) => Some((dlq.clone(), p)),
                Err(e) => {
                    status.fail(format!(
                        "cannot create the dead letter queue producer for {brokers}: {e}"
                    ));
                    return Ended::Stopped;
                }
            }
        }
        None => None,
    };
    let client = match connect(&config, &status, &shutdown).await {
        Ok(client) => client,
        Err(Stop::Shutdown) => return Ended::Stopped,
        Err(Stop::Halted) => {
            ctx.shutdown.wait().await;
            return Ended::Stopped;
        }
    };
    status.set_state(State::Running);
    tokio::spawn(kafka::watch_lag(
        consumer_for_lag(&brokers, &config),
        lag_topics(&brokers, &config).await,
        consumer.context().clone(),
        status.clone(),
        shutdown.clone(),
    ));
    tracing::info!(topics = ?subscription, target = %config.target, group = %config.group_id, "sink running");
    // Gathering and decoding the next batch overlaps the write of the previous
    // one; the channel holds one batch, so a slow database slows consumption.
    let consumer = Arc::new(consumer);
    let mut guard = Guard {
        gaps: GapGuard::default(),
        consumer: consumer.clone(),
    };
    let (tx, rx) = mpsc::channel::<Batch>(1);
    let writer = tokio::spawn(write_loop(
        config.clone(),
        status.clone(),
        shutdown.clone(),
        consumer.clone(),
        client,
        rx,
    ));
    let mut last = Last::default();
    let mut stopped: Option<BadRecord> = None;
    let mut fatal: Option<String> = None;
    let gather = Gatherer {
        config: &config,
        name: &ctx_name,
        task: ctx.task,
        dead_letters: dead_letters.as_ref(),
    };
    let mut probe = tokio::time::interval(QUIET_PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            // Records first: the probe looks only when none are queued here.
            biased;
            m = consumer.recv() => m,
            _ = probe.tick() => {
                guard.probe().await;
                continue;
            }
            _ = shutdown.wait() => break,
        };
        let mut batch = Batch::default();
        match first {
            Ok(m) => {
                if !guard.admit(&m).await {
                    continue;
                }
                if let Gathered::Stop(bad) = gather.add(&mut batch, &m, &mut last).await {
                    stopped = Some(bad);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    fatal = Some(format!("{code:?}: {reason}"));
                    break;
                }
                continue;
            }
        }
        while stopped.is_none() && batch.rows.len() < config.batch_size {
            match tokio::time::timeout(GATHER_IDLE, consumer.recv()).await {
                Ok(Ok(m)) => {
                    if !guard.admit(&m).await {
                        continue;
                    }
                    if let Gathered::Stop(bad) = gather.add(&mut batch, &m, &mut last).await {
                        stopped = Some(bad);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        fatal = Some(format!("{code:?}: {reason}"));
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        if batch.skipped > 0 {
            Status::add(&status.skipped, batch.skipped);
        }
        Status::add(&status.bytes, batch.bytes);
        if tx.send(batch).await.is_err() {
            // The writer stopped: shutdown while Postgres was away.
            break;
        }
        if stopped.is_some() || fatal.is_some() {
            break;
        }
    }
    drop(tx);
    if let Some(bad) = stopped {
        // The rows before the bad record are written and committed first; the
        // record itself stays uncommitted, read again after a restart.
        let _ = writer.await;
        tracing::error!(topic = %bad.topic, partition = bad.partition, offset = bad.offset, reason = %bad.reason,
            "sink stopped: a record cannot be decoded and errors.tolerance=none; fix or skip it (errors.tolerance=all, or a dead letter queue), then restart the connector");
        status.halt(format!("{bad}; the task stopped (errors.tolerance=none)"));
        shutdown.wait().await;
        return Ended::Stopped;
    }
    // Batches already handed over are written (or, if Postgres is away at
    // shutdown, replayed after a restart since their offsets stay uncommitted).
    let _ = writer.await;
    if status.snapshot().halted {
        // The writer gave up (max.retries, connection.attempts): FAILED, with
        // the batch uncommitted, until the connector is restarted.
        ctx.shutdown.wait().await;
        return Ended::Stopped;
    }
    match fatal {
        Some(e) => Ended::Fatal(e),
        None => Ended::Stopped,
    }
}

/// Writes batches in order, committing each one's offsets after its rows. A
/// write that halts the task trips `shutdown` (this life of the task's), so
/// gathering stops too.
async fn write_loop(
    config: SinkConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
    consumer: Arc<StreamConsumer<Rebalances>>,
    client: Client,
    mut batches: mpsc::Receiver<Batch>,
) {
    let mut client = Some(client);
    let mut cache = TableCache::default();
    while let Some(batch) = batches.recv().await {
        match write(
            &config,
            &status,
            &shutdown,
            &mut client,
            &mut cache,
            batch.rows,
        )
        .await
        {
            Ok(()) => commit(&consumer, &batch.offsets).await,
            Err(Stop::Shutdown) => return,
            Err(Stop::Halted) => {
                shutdown.trigger();
                return;
            }
        }
    }
}

/// Connects to Postgres, retrying as `connection.attempts` and
/// `connection.backoff.ms` say (unset: until it succeeds, UNASSIGNED meanwhile).
async fn connect(
    config: &SinkConfig,
    status: &Status,
    shutdown: &Shutdown,
) -> Result<Client, Stop> {
    let what = format!("Postgres {}", config.target);
    let mut attempts = Attempts::new(config.connect_retries);
    loop {
        if shutdown.is_triggered() {
            return Err(Stop::Shutdown);
        }
        match config.target.pg_config().connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "Postgres connection ended");
                    }
                });
                if attempts.failed > 0 {
                    tracing::info!(dependency = %what, attempts = attempts.failed + 1, "connected");
                }
                return Ok(client);
            }
            Err(e) => {
                let message = format!("cannot connect to {what}: {e}");
                let Some(delay) = attempts.after_failure() else {
                    let n = attempts.failed;
                    tracing::error!(error = %message, attempts = n, "giving up on Postgres (connection.attempts); the task stops");
                    status.halt(format!(
                        "{message}; gave up after {n} attempts (connection.attempts={n}): make the database reachable, then restart the connector"
                    ));
                    return Err(Stop::Halted);
                };
                if attempts.loud() {
                    tracing::warn!(dependency = %what, attempt = attempts.failed, error = %e, retry_in_ms = delay.as_millis() as u64, "waiting for dependency");
                } else {
                    tracing::debug!(dependency = %what, attempt = attempts.failed, error = %e, "waiting for dependency");
                }
                status.waiting(message);
                if !shutdown.sleep(delay).await {
                    return Err(Stop::Shutdown);
                }
            }
        }
    }
}

/// The gap guard ([`gaps`]) on the sink's consumer: starts over from the
/// group's committed offsets after every rebalance, and seeks a partition back
/// when a message has to wait for a refetch.
struct Guard {
    gaps: GapGuard,
    consumer: Arc<StreamConsumer<Rebalances>>,
}

impl Guard {
    /// After a rebalance, starts over from the committed offsets.
    async fn follow_rebalances(&mut self) {
        let generation = self.consumer.context().generation();
        if generation != self.gaps.generation() {
            self.gaps.rebalanced(generation);
            for (topic, partition, next) in committed(&self.consumer).await {
                self.gaps.resume_at(&topic, partition, next);
            }
        }
    }

    /// Looks, for each partition that delivered nothing since the last probe,
    /// whether records wait there; seeks back where they do
    /// ([`GapGuard::quiet`]).
    async fn probe(&mut self) {
        self.follow_rebalances().await;
        for (topic, partition, next) in self.gaps.idle() {
            let Some(high) = self.consumer.context().high_watermark(&topic, partition) else {
                continue;
            };
            if let Some(from) = self.gaps.quiet(&topic, partition, high) {
                tracing::debug!(%topic, partition, next, high, from,
                    "records wait but none came; fetching again from before the offset expected");
                seek(&self.consumer, &topic, partition, from).await;
            }
        }
    }

    /// Whether `m` goes into the batch. A message held back is fetched again.
    async fn admit(&mut self, m: &BorrowedMessage<'_>) -> bool {
        self.follow_rebalances().await;
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        match self.gaps.check(topic, partition, offset) {
            Verdict::Take => true,
            Verdict::Skip => false,
            Verdict::Healed { missing, refetches } => {
                tracing::info!(%topic, partition, from = missing.start, to = missing.end - 1, refetches,
                    "offsets the broker skipped were fetched again");
                true
            }
            Verdict::Accepted { missing } => {
                tracing::info!(%topic, partition, from = missing.start, to = missing.end - 1,
                    "offset gap with no records (compaction or transaction markers); going on");
                true
            }
            Verdict::Refetch { from } => {
                tracing::debug!(%topic, partition, from, got = offset,
                    "offset gap; fetching again from before it");
                seek(&self.consumer, topic, partition, from).await;
                false
            }
        }
    }
}

/// The group's committed offset of each partition assigned now: where its
/// fetching resumed. Empty when unknown (the first messages set the baseline).
async fn committed(consumer: &Arc<StreamConsumer<Rebalances>>) -> Vec<(String, i32, i64)> {
    let consumer = consumer.clone();
    let found =
        tokio::task::spawn_blocking(move || consumer.committed(Duration::from_secs(5))).await;
    match found {
        Ok(Ok(tpl)) => tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
                _ => None,
            })
            .collect(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot read the committed offsets; the first records set the baseline");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// Seeks the partition to `offset`. librdkafka drops the records of that
/// partition it had fetched already (a version barrier), so the next record of
/// the partition is the one at `offset`, or the first after it the broker has.
/// Blocking until the fetcher took the new position, so on a blocking thread.
async fn seek(
    consumer: &Arc<StreamConsumer<Rebalances>>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let (consumer, t) = (consumer.clone(), topic.to_string());
    let sought = tokio::task::spawn_blocking(move || {
        consumer.seek(
            &t,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(5),
        )
    })
    .await;
    match sought {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(%topic, partition, offset, error = %e, "cannot seek back over an offset gap; trying again at the next record")
        }
        Err(e) => tracing::warn!(error = %e, "seek task failed"),
    }
}

/// Adds records to a batch, applying `errors.tolerance` to those that do not decode.
struct Gatherer<'a> {
    config: &'a SinkConfig,
    name: &'a str,
    task: u32,
    dead_letters: Option<&'a (DeadLetters, FutureProducer)>,
}

impl Gatherer<'_> {
    async fn add(&self, batch: &mut Batch, m: &BorrowedMessage<'_>, last: &mut Last) -> Gathered {
        let reason = match decode(self.config, m, last) {
            Ok(incoming) => {
                batch.bytes += m.payload_len() as u64;
                batch.rows.push(incoming);
                note_offset(batch, m);
                return Gathered::Added;
            }
            Err(reason) => reason,
        };
        let bad = BadRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            reason,
        };
        if self.config.tolerance == Tolerance::None {
            return Gathered::Stop(bad);
        }
        if let Some((dlq, producer)) = self.dead_letters {
            // Acknowledged before the offset counts: a crash replays it instead.
            let mut backoff = Backoff::default();
            loop {
                match dead_letter(producer, dlq, self.name, self.task, m, &bad).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic = %dlq.topic, error = %e, "cannot write to the dead letter queue; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        } else {
            batch.skipped += 1;
        }
        if self.config.log_errors || self.dead_letters.is_none() {
            tracing::warn!(topic = %bad.topic, partition = bad.partition, offset = bad.offset, reason = %bad.reason,
                dead_letter_queue = self.dead_letters.map(|(d, _)| d.topic.as_str()).unwrap_or(""),
                "record tolerated (errors.tolerance=all)");
        }
        note_offset(batch, m);
        Gathered::Tolerated
    }
}

fn note_offset(batch: &mut Batch, m: &BorrowedMessage<'_>) {
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    // A batch holds a few partitions: found by a look at each (the partition
    // number first, the name only on a match), the topic's name is not
    // copied for every record.
    match batch
        .offsets
        .iter_mut()
        .find(|((t, p), _)| *p == partition && t == topic)
    {
        Some((_, highest)) => *highest = (*highest).max(offset),
        None => {
            batch.offsets.insert((topic.to_string(), partition), offset);
        }
    }
}

/// Sends the record as it was (key, value, headers) to the dead letter queue, with
/// Kafka Connect's `__connect.errors.*` headers when asked.
async fn dead_letter(
    producer: &FutureProducer,
    dlq: &DeadLetters,
    connector: &str,
    task: u32,
    m: &BorrowedMessage<'_>,
    bad: &BadRecord,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    if dlq.context_headers {
        let task = task.to_string();
        let partition = bad.partition.to_string();
        let offset = bad.offset.to_string();
        for (key, value) in [
            ("__connect.errors.topic", bad.topic.as_str()),
            ("__connect.errors.partition", partition.as_str()),
            ("__connect.errors.offset", offset.as_str()),
            ("__connect.errors.connector.name", connector),
            ("__connect.errors.task.id", task.as_str()),
            ("__connect.errors.stage", "VALUE_CONVERTER"),
            (
                "__connect.errors.class.name",
                "org.apache.kafka.connect.json.JsonConverter",
            ),
            (
                "__connect.errors.exception.class.name",
                "org.apache.kafka.connect.errors.DataException",
            ),
            ("__connect.errors.exception.message", bad.reason.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    let mut record = FutureRecord::to(&dlq.topic).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Some(payload) = m.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// How the records of one value schema are shaped for their table: the
/// fields kept (`fields.whitelist`, plus the key fields), named as columns
/// (`quote.sql.identifiers`), and where the key fields are.
struct Shape {
    /// The schema as the record carried it.
    source: Arc<Schema>,
    schema: Arc<Schema>,
    /// Positions in the record's values of the fields kept; None: all of them.
    keep: Option<Vec<usize>>,
    /// `pk.mode=record_value`: positions of the key fields among the kept ones.
    key: Vec<usize>,
}

impl Shape {
    fn new(config: &SinkConfig, source: Arc<Schema>) -> Result<Self, String> {
        let named: Vec<Field> = source
            .fields
            .iter()
            .map(|f| Field {
                name: config.quoting.name(&f.name),
                ..f.clone()
            })
            .collect();
        let key_fields: &[String] = match &config.pk {
            PkMode::RecordValue(fields) => fields,
            _ => &[],
        };
        let keep: Option<Vec<usize>> = config.fields.as_ref().map(|wanted| {
            (0..named.len())
                .filter(|&i| wanted.contains(&named[i].name) || key_fields.contains(&named[i].name))
                .collect()
        });
        let fields: Vec<Field> = match &keep {
            Some(idx) => idx.iter().map(|&i| named[i].clone()).collect(),
            None => named,
        };
        let key = key_fields
            .iter()
            .map(|k| {
                fields.iter().position(|f| &f.name == k).ok_or_else(|| {
                    format!("the record value has no field {k:?}, which pk.fields names (pk.mode=record_value)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            schema: Arc::new(Schema {
                name: source.name.clone(),
                fields,
            }),
            source,
            keep,
            key,
        })
    }

    /// The record's values for the table; an error when a key field is null.
    fn values(&self, values: Vec<Value>) -> Result<Vec<Value>, String> {
        let values = match &self.keep {
            Some(idx) => idx
                .iter()
                .map(|&i| values.get(i).cloned().unwrap_or(Value::Null))
                .collect(),
            None => values,
        };
        for &k in &self.key {
            if matches!(values.get(k), None | Some(Value::Null)) {
                return Err(format!(
                    "key field {:?} (pk.fields) is null",
                    self.schema.fields[k].name
                ));
            }
        }
        Ok(values)
    }
}

fn decode(
    config: &SinkConfig,
    m: &BorrowedMessage<'_>,
    last: &mut Last,
) -> Result<Incoming, String> {
    let mut file = None;
    let mut row = None;
    let mut traceparent = "";
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            match h.key {
                names::HEADER_FILE => file = Some(v),
                names::HEADER_ROW => row = v.parse::<i64>().ok(),
                names::HEADER_TRACEPARENT => traceparent = v,
                _ => {}
            }
        }
    }
    if file.is_none() || row.is_none() {
        let key = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or("no etl.file/etl.row headers and no UTF-8 key")?;
        let (f, r) = etl_core::parse_record_key(key)
            .ok_or_else(|| format!("key {key:?} is not {{file}}:{{row}}"))?;
        file = Some(f);
        row = i64::try_from(r).ok();
    }
    let (Some(file), Some(row)) = (file, row) else {
        return Err("row number out of range".into());
    };
    let file = shared(&mut last.file, file);
    let topic = shared(&mut last.topic, m.topic());
    let trace_id = etl_telemetry::trace_id_of(traceparent).map(|t| shared(&mut last.trace_id, t));
    let traceparent = shared(&mut last.traceparent, traceparent);
    let Some(payload) = m.payload() else {
        if config.delete_enabled {
            return Ok(Incoming {
                topic,
                change: Change::Delete { file, row },
                traceparent,
            });
        }
        return Err(
            "record has no value (a tombstone; set delete.enabled=true to delete its row)".into(),
        );
    };
    let (schema, values) = envelope::decode(payload).map_err(|e| e.to_string())?;
    if !last
        .shape
        .as_ref()
        .is_some_and(|s| Arc::ptr_eq(&s.source, &schema) || s.source == schema)
    {
        last.shape = Some(Shape::new(config, schema)?);
    }
    let shape = last.shape.as_ref().ok_or("no shape")?;
    let values = shape.values(values)?;
    Ok(Incoming {
        change: Change::Row(SinkRow {
            file,
            row,
            trace_id,
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            schema: shape.schema.clone(),
            values,
        }),
        topic,
        traceparent,
    })
}

/// Writes the batch, table by table, retrying as `max.retries` and
/// `retry.backoff.ms` say (unset: until it is committed).
async fn write(
    config: &SinkConfig,
    status: &Status,
    shutdown: &Shutdown,
    client: &mut Option<Client>,
    cache: &mut TableCache,
    incoming: Vec<Incoming>,
) -> Result<(), Stop> {
    let mut by_table: BTreeMap<String, Vec<Incoming>> = BTreeMap::new();
    for i in incoming {
        by_table
            .entry(config.table_for(&i.topic))
            .or_default()
            .push(i);
    }
    let spec = WriteSpec {
        mode: config.insert_mode,
        pk: &config.pk,
        auto_create: config.auto_create,
        auto_evolve: config.auto_evolve,
    };
    for (table, incoming) in by_table {
        let topic = incoming
            .first()
            .map(|i| i.topic.clone())
            .unwrap_or_default();
        let spans = file_spans(&topic, &table, &incoming);
        let (rows, deletes) =
            postgres::dedup_last(incoming.into_iter().map(|i| i.change).collect(), &config.pk);
        let mut attempts = Attempts::new(config.write_retries);
        loop {
            if client.as_ref().is_none_or(Client::is_closed) {
                *client = None;
                *client = Some(connect(config, status, shutdown).await?);
            }
            let Some(c) = client.as_mut() else {
                return Err(Stop::Shutdown);
            };
            let started = std::time::Instant::now();
            let result = postgres::write_batch(c, cache, &table, &rows, &deletes, spec)
                .instrument(
                    spans
                        .first()
                        .map(|(_, db)| db.clone())
                        .unwrap_or_else(Span::none),
                )
                .await;
            match result {
                Ok(written) => {
                    for (file, db) in &spans {
                        let n = rows.iter().filter(|r| *r.file == **file).count() as u64;
                        db.record(names::DB_ROWS, n);
                    }
                    Status::add(&status.records, written.staged);
                    status.progress();
                    status.set_state(State::Running);
                    tracing::debug!(%table, rows = written.staged, deletes = deletes.len(), changed = written.changed, elapsed_ms = started.elapsed().as_millis() as u64, "batch written");
                    break;
                }
                Err(e) => {
                    cache.clear();
                    if e.is_closed() {
                        *client = None;
                    }
                    let message = describe(&e, &table, config);
                    let Some(delay) = attempts.after_failure() else {
                        let n = attempts.failed - 1;
                        tracing::error!(error = %message, retries = n, "batch not written and max.retries used up; the task stops");
                        status.halt(format!(
                            "{message}; gave up after {n} retries (max.retries={n}): the batch's records stay in Kafka, uncommitted; fix the cause, then restart the connector"
                        ));
                        return Err(Stop::Halted);
                    };
                    tracing::warn!(error = %message, attempt = attempts.failed, "batch not written; retrying");
                    status.fail(message);
                    if !shutdown.sleep(delay).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        }
    }
    Ok(())
}

fn describe(e: &WriteError, table: &str, config: &SinkConfig) -> String {
    match e {
        WriteError::Postgres(pg) => match pg.as_db_error() {
            Some(db) => format!(
                "Postgres {}: writing table {table:?}: {} ({})",
                config.target,
                db.message(),
                db.code().code()
            ),
            None => format!("Postgres {}: writing table {table:?}: {pg}", config.target),
        },
        other => format!("Postgres {}: {other}", config.target),
    }
}

/// Per file of the batch: a `process <topic>` span in the file's trace and,
/// inside it, the database client span of the write.
fn file_spans(topic: &str, table: &str, incoming: &[Incoming]) -> Vec<(String, Span)> {
    let mut firsts: Vec<(&str, &str, u64)> = Vec::new();
    for i in incoming {
        let file = i.change.file();
        match firsts.iter_mut().find(|(f, _, _)| *f == file) {
            Some(entry) => entry.2 += 1,
            None => firsts.push((file, &i.traceparent, 1)),
        }
    }
    firsts
        .into_iter()
        .map(|(file, tp, count)| {
            let process = tracing::info_span!(
                "process",
                otel.name = %format!("process {topic}"),
                otel.kind = "consumer",
                { names::MESSAGING_SYSTEM } = "kafka",
                { names::MESSAGING_DESTINATION } = %topic,
                { names::MESSAGING_OPERATION_TYPE } = "process",
                { names::MESSAGING_BATCH_COUNT } = count,
                etl.file = %file,
            );
            etl_telemetry::context::set_parent(&process, tp);
            let db = tracing::info_span!(
                parent: &process,
                "db",
                otel.name = %format!("INSERT {table}"),
                otel.kind = "client",
                { names::DB_SYSTEM } = "postgresql",
                { names::DB_OPERATION } = "INSERT",
                { names::DB_COLLECTION } = %table,
                { names::DB_ROWS } = tracing::field::Empty,
            );
            (file.to_string(), db)
        })
        .collect()
}

/// Commits `offset + 1` per partition: the next record to read. librdkafka's
/// synchronous commit blocks its thread for a broker round trip, so it runs on a
/// blocking thread, not on the runtime.
async fn commit(
    consumer: &Arc<StreamConsumer<Rebalances>>,
    offsets: &BTreeMap<(String, i32), i64>,
) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1)) {
            tracing::warn!(%topic, partition, error = %e, "cannot prepare offset commit");
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let consumer = consumer.clone();
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
    // A failed commit (say, during a rebalance) only means a replay, which
    // the sink's writes make harmless.
    match committed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "offset commit failed; the batch may be replayed"),
        Err(e) => {
            tracing::warn!(error = %e, "offset commit task failed; the batch may be replayed")
        }
    }
}

/// A second consumer in the same group, never subscribed: it only reads the group's
/// committed offsets for the lag behind the health status.
fn consumer_for_lag(brokers: &str, config: &SinkConfig) -> Option<rdkafka::consumer::BaseConsumer> {
    kafka::lag_client(brokers, &config.group_id)
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot create the lag probe; lag is not watched"),
        )
        .ok()
}

/// The topics whose lag is watched: those named, or those matching
/// `topics.regex` when the task starts.
async fn lag_topics(brokers: &str, config: &SinkConfig) -> Vec<String> {
    let Some(regex) = config.topics_regex.clone() else {
        return config.topics.clone();
    };
    let brokers = brokers.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let client = kafka::probe_client(&brokers).map_err(|e| e.to_string())?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|t| regex.is_match(t))
                .collect::<Vec<_>>(),
        )
    })
    .await;
    match found {
        Ok(Ok(topics)) => topics,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list the topics topics.regex matches; lag is not watched");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}
