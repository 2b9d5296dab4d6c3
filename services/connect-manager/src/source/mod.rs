//! The source connector: every new CSV/TSV file in the SFTP input directory
//! becomes one Kafka record per row, and only once every record is
//! acknowledged does the file move to `finished/`.
//!
//! Files are found two ways: a poll of the input directory every
//! `file.poll.interval.ms` (works with any SFTP server), and, with
//! `etl.gateway.url`, the gateway's `WatchFiles` stream, which says at once
//! when an upload completes and carries the uploader's trace context. A set of
//! files in flight keeps the two from sending a file twice.
//!
//! A file that does not parse (ragged row, invalid UTF-8, no header) moves to
//! `error/` beside `<name>.error.txt`, which names the line; with
//! `behavior.on.error=FAIL` the task then stops (FAILED) until restarted,
//! with LOG (our default) or IGNORE the next files go on. A Kafka or SFTP
//! failure leaves the file where it is, to be retried: replaying records is
//! harmless because the sink is idempotent on `(file, row)`.
//!
//! The record schema is inferred (losslessly, see `etl_core::infer`) and pinned
//! by the first file, or declared with `value.schema`, which wins: each
//! declared field is read from the column of its name.
//!
//! # Distributed mode
//! With a cluster (`TaskContext::cluster`), several tasks on several workers
//! scan the same input directory. Each claims a file before reading it, with
//! an atomic rename into its worker's claim directory (`claims`), and takes
//! over the claims of workers that left the group; the files sent and the
//! pinned schema live in the cluster's offset topic (`offsets`), so all
//! workers skip the same files and send with the same schema. Without a
//! cluster nothing of this happens: files are read where they are and the
//! state lives in the data directory (`state`).

pub(crate) mod claims;
pub(crate) mod config;
pub(crate) mod offsets;
pub(crate) mod state;
mod watch;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use etl_core::{
    Field, FieldType, Schema, Value,
    envelope::Encoder,
    infer::{infer_columns, parse_declared, parse_value},
    naming, record_key,
    table::{self, Table},
};
use etl_service::{Shutdown, retry};
use etl_sftp::{SftpClient, SftpError};
use etl_telemetry::names;
use futures::{StreamExt, stream::FuturesUnordered};
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use tokio::{sync::mpsc, task::JoinSet};
use tracing::{Instrument, field::Empty};

pub(crate) use config::SourceConfig;
use config::{Cleanup, OnError};

use crate::{
    connector::TaskContext,
    kafka,
    status::{State, Status},
};

/// How long in-flight files may take to finish once shutdown trips; after
/// that they are abandoned (left in input/, or in distributed mode in the
/// worker's claim directory, and sent again whole after a restart or by the
/// worker that takes the claim over: the sink's upsert makes the records
/// already sent harmless). Below the 10 s
/// that supervisors (compose, etlctl) give a service between SIGTERM and SIGKILL.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a stopping task may take to hand its leftover claims back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest row (its values' bytes) the source sends: with the envelope's
/// schema and JSON escaping it stays under the 1 MB a Kafka record may have by
/// default (librdkafka's `message.max.bytes`, the broker's `max.message.bytes`).
const MAX_ROW_BYTES: usize = 800_000;
/// While the gateway's watch is up, the poll leaves files younger than this
/// to the notice, which carries the uploader's trace context; the poll is the
/// fallback for notices that never came.
const NOTICE_GRACE: Duration = Duration::from_secs(2);

/// A file to process, and the trace it belongs to (from the gateway's notice).
#[derive(Debug)]
pub(crate) struct Notice {
    pub(crate) name: String,
    pub(crate) traceparent: String,
    pub(crate) origin: Origin,
}

/// Where a file to process is (distributed mode tells them apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// In the input directory (in distributed mode: to be claimed first).
    Input,
    /// In this worker's claim directory already (a retry, or a restart).
    Claimed,
    /// In the claim directory of this dead worker: to be taken over first.
    Orphan(String),
}

/// Messages from the gateway watcher to the main loop.
#[derive(Debug)]
pub(crate) enum WatchEvent {
    File(Notice),
    /// The watch (re)connected: events may have been missed, list the directory.
    Rescan,
}

/// How processing one file ended.
#[derive(Debug)]
enum Outcome {
    /// Every record acknowledged and the file cleaned up.
    Finished { records: u64, stat: FileStat },
    /// Did not parse: moved to error/ with this reason.
    Rejected(String),
    /// Nothing to do: no longer in input/ (another worker or task has it, or
    /// a poll raced a move), or sent already (`cleanup.policy=NONE`).
    Gone,
    /// Kafka or SFTP trouble: left in place, retried by a later poll.
    Retry(String),
    /// The SFTP session broke: reconnect, then retry.
    Reconnect(String),
}

use claims::{Claim, Claims};
use offsets::TopicStore;
use state::{FileStat, PinnedSchema, SourceState, StateFile, StateStore};

/// Everything a file worker needs, shared.
struct Shared {
    config: SourceConfig,
    brokers: String,
    /// Replaced when it reports a fatal error (an idempotent producer can, e.g.
    /// after a broker lost its state): a fatal producer never sends again.
    producer: std::sync::Mutex<FutureProducer>,
    status: Arc<Status>,
    /// Processed files and the pinned schema, saved to `store` on change.
    state: tokio::sync::Mutex<SourceState>,
    store: StateStore,
    /// Distributed mode: this worker's file claims and the group's live workers.
    cluster: Option<(
        Claims,
        tokio::sync::watch::Receiver<std::collections::BTreeSet<String>>,
    )>,
}

impl Shared {
    fn claims(&self) -> Option<&Claims> {
        self.cluster.as_ref().map(|(c, _)| c)
    }
}

pub(crate) async fn run(config: SourceConfig, ctx: TaskContext) {
    let TaskContext {
        name,
        brokers,
        status,
        shutdown,
        data_dir,
        client,
        cluster,
        ..
    } = ctx;
    let span = tracing::info_span!("source", connector = %name);
    async move {
        status.set_state(State::Unassigned);
        let (store, state) = match &cluster {
            None => {
                let file = StateFile::new(&data_dir, &name);
                match file.load() {
                    Ok(s) => (StateStore::File(file), s),
                    Err(e) => {
                        status.halt(e);
                        return;
                    }
                }
            }
            Some(c) => {
                // Kafka away is a wait, not a failure: every worker reads the
                // same topic, and it comes back.
                let store = StateStore::Topic(TopicStore::new(&c.brokers, &c.offset_topic, &name));
                let what = format!("source offsets in topic {} at {}", c.offset_topic, c.brokers);
                match retry(&what, &shutdown, || async {
                    store.load().await.inspect_err(|e| status.waiting(e.clone()))
                })
                .await
                {
                    Some(s) => (store, s),
                    None => return,
                }
            }
        };
        let cluster = cluster.map(|c| {
            let scope = format!("{} {}", config.sftp.server(), config.sftp.user);
            (Claims::new(&config.input_path, &c.worker, &scope), c.live)
        });
        let producer = match kafka::producer(&brokers) {
            Ok(p) => p,
            Err(e) => {
                status.fail(format!("cannot create Kafka producer for {brokers}: {e}"));
                return;
            }
        };
        let topic_what = format!("Kafka topic {} at {brokers}", config.topic);
        let ensured = retry(&topic_what, &shutdown, || {
            kafka::ensure_topic(&brokers, &config.topic, config.partitions)
        })
        .await;
        if ensured.is_none() {
            return;
        }
        warm_up(&producer, &config.topic).await;
        let claim_dir = cluster.as_ref().map(|(c, _)| c.dir().to_string());
        let Some(sftp) = connect_sftp(&config, claim_dir.as_deref(), &status, &shutdown).await
        else {
            return;
        };
        status.set_state(State::Running);
        tracing::info!(topic = %config.topic, input = %config.input_path, server = %config.sftp.server(), claims = claim_dir.as_deref().unwrap_or(""), "source running");
        let (tx, rx) = mpsc::channel(1024);
        let watching = Arc::new(AtomicBool::new(false));
        if let Some(url) = &config.gateway_url {
            tokio::spawn(watch::watch_gateway(
                url.clone(),
                client,
                config.sftp.user.clone(),
                config.input_path.clone(),
                tx,
                watching.clone(),
                shutdown.clone(),
            ));
        } else {
            drop(tx);
        }
        let shared = Arc::new(Shared {
            config,
            brokers,
            producer: std::sync::Mutex::new(producer),
            status: status.clone(),
            state: tokio::sync::Mutex::new(state),
            store,
            cluster,
        });
        main_loop(shared, sftp, rx, watching, claim_dir, shutdown.clone()).await;
        if status.snapshot().halted {
            // behavior.on.error=FAIL stopped it: FAILED until restarted.
            shutdown.wait().await;
        }
    }
    .instrument(span)
    .await
}

/// Fetches the topic's metadata through the producer before the first file, so
/// the first file's `send` does not pay for the producer's start (metadata, and
/// the idempotent producer's id, which librdkafka asks for as it connects).
async fn warm_up(producer: &FutureProducer, topic: &str) {
    use rdkafka::producer::Producer as _;
    let (producer, topic) = (producer.clone(), topic.to_string());
    let started = std::time::Instant::now();
    // A topic created a moment ago may not have a leader for every partition yet;
    // the first send would then wait for librdkafka's next metadata refresh.
    let ready = tokio::task::spawn_blocking(move || {
        kafka::wait_led(producer.client(), &topic, Duration::from_secs(10))
    })
    .await;
    match ready {
        Ok(Ok(())) => tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "producer ready"
        ),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "producer warm-up failed; the first send will wait")
        }
        Err(_) => {}
    }
}

/// Connects and makes the directories the source writes to (in distributed
/// mode also this worker's claim directory, `claim_dir`).
async fn connect_sftp(
    config: &SourceConfig,
    claim_dir: Option<&str>,
    status: &Status,
    shutdown: &Shutdown,
) -> Option<SftpClient> {
    let what = format!(
        "SFTP server {} (user {})",
        config.sftp.server(),
        config.sftp.user
    );
    retry(&what, shutdown, || async {
        let client = SftpClient::connect_with(&config.sftp, &config.host_keys)
            .await
            .inspect_err(|e| status.waiting(e.to_string()))?;
        for dir in [
            config.input_path.as_str(),
            &config.finished_path,
            &config.error_path,
        ]
        .into_iter()
        .chain(claim_dir)
        {
            client.mkdir_all(dir).await?;
        }
        Ok::<_, SftpError>(client)
    })
    .await
}

async fn main_loop(
    shared: Arc<Shared>,
    mut sftp: SftpClient,
    mut events: mpsc::Receiver<WatchEvent>,
    watching: Arc<AtomicBool>,
    claim_dir: Option<String>,
    shutdown: Shutdown,
) {
    let config = &shared.config;
    let mut interval = tokio::time::interval(config.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut jobs: JoinSet<(String, u64, Outcome)> = JoinSet::new();
    // Which SFTP connection is current: every job that was in flight on a
    // connection that ended fails with a lost connection, and only the first
    // of them (the one whose connection is still the current one) reconnects.
    let mut connection: u64 = 0;
    // Which file each job holds, so a job that panics still releases its file.
    let mut job_files: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<Notice> = VecDeque::new();
    // Distributed mode: since when each worker with claims was seen not live.
    let mut missing_since: HashMap<String, std::time::Instant> = HashMap::new();

    loop {
        let mut reconnect = None;
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = interval.tick() => {
                let min_age = if watching.load(Ordering::Relaxed) {
                    config.min_age.max(NOTICE_GRACE)
                } else {
                    config.min_age
                };
                let sent = {
                    let mut state = shared.state.lock().await;
                    if shared.cluster.is_some() && config.cleanup == Cleanup::None {
                        // Other workers' sends, so the scan skips what they put back.
                        if let Err(e) = shared.store.refresh(&mut state).await {
                            tracing::warn!(error = %e, "cannot read the files other workers sent; scanning with what is known");
                        }
                    }
                    state.sent.clone()
                };
                match scan(&sftp, config, min_age, &sent).await {
                    Ok(names) => {
                        for name in names {
                            let n = notice(name, String::new(), Origin::Input);
                            enqueue(&mut queue, &in_flight, n);
                        }
                    }
                    Err(e) if e.is_connection() => reconnect = Some(e.to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the input directory");
                        shared.status.fail(e.to_string());
                    }
                }
                if let Some((claims, live)) = &shared.cluster && reconnect.is_none() {
                    let live = live.borrow().clone();
                    match claims.survey(&sftp, &live).await {
                        Ok(survey) => {
                            queue_claims(config, survey, &mut missing_since, &mut queue, &in_flight);
                        }
                        Err(e) if e.is_connection() => reconnect = Some(e.to_string()),
                        Err(e) => {
                            tracing::warn!(error = %e, claims = claim_dir.as_deref().unwrap_or(""), "cannot list the claim directories");
                            shared.status.fail(e.to_string());
                        }
                    }
                }
            }
            Some(event) = events.recv() => match event {
                WatchEvent::File(n) => {
                    if wanted(config, &n.name) && !config.min_age.is_zero() {
                        // The poll checks the age; a notice alone cannot.
                        tracing::debug!(file = %n.name, "notice ignored: file.minimum.age.ms is set");
                    } else if config.cleanup == Cleanup::None
                        && shared.state.lock().await.sent.contains_key(&n.name)
                    {
                        // Sent already and left in place: a repeated notice (a
                        // replay, a listing at resubscription) must not send it
                        // again; the poll compares size and mtime to see a new version.
                        tracing::debug!(file = %n.name, "notice for a file already sent; left to the poll");
                    } else if wanted(config, &n.name) {
                        enqueue(&mut queue, &in_flight, n);
                    }
                }
                WatchEvent::Rescan => interval.reset_immediately(),
            },
            Some(joined) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                let (name, used, outcome) = match joined {
                    Ok((id, (name, used, outcome))) => {
                        job_files.remove(&id);
                        (name, used, outcome)
                    }
                    Err(e) => {
                        // A panicked job must not strand its file: release it, and
                        // the next poll takes it again.
                        let name = job_files.remove(&e.id()).unwrap_or_default();
                        tracing::error!(file = %name, error = %e, "file job failed; the file is left in place for the next poll");
                        (name.clone(), connection, Outcome::Retry(format!("file {name}: job failed: {e}")))
                    }
                };
                in_flight.remove(&name);
                match outcome {
                    Outcome::Finished { records, stat } => {
                        Status::add(&shared.status.files_finished, 1);
                        Status::add(&shared.status.bytes, stat.0);
                        Status::add(&shared.status.records, records);
                        shared.status.set_state(State::Running);
                        shared.status.progress();
                        // In distributed mode the job recorded it before putting
                        // the file back where every worker's scan sees it.
                        if config.cleanup == Cleanup::None && shared.cluster.is_none() {
                            let mut state = shared.state.lock().await;
                            if let Err(e) = shared.store.record_sent(&mut state, &name, stat).await {
                                tracing::error!(error = %e, "cannot remember a sent file; it may be sent again after a restart");
                            }
                        }
                    }
                    Outcome::Rejected(reason) => {
                        Status::add(&shared.status.files_failed, 1);
                        if config.on_error == OnError::Fail {
                            tracing::error!(file = %name, %reason, "file rejected and behavior.on.error=FAIL: the task stops");
                            shared.status.halt(format!(
                                "file {name} moved to {}/: {reason}; the task stopped (behavior.on.error=FAIL): fix the file, then restart the connector",
                                config.error_path
                            ));
                            break;
                        }
                    }
                    Outcome::Gone => {}
                    Outcome::Retry(e) => {
                        tracing::warn!(file = %name, error = %e, "file left in place; retrying at the next poll");
                        shared.status.fail(e);
                    }
                    Outcome::Reconnect(e) if used == connection => reconnect = Some(e),
                    Outcome::Reconnect(e) => {
                        tracing::debug!(file = %name, error = %e, "file job lost a connection already replaced; the file is taken again at the next poll");
                    }
                }
            }
        }
        if let Some(e) = reconnect {
            tracing::warn!(error = %e, "SFTP session lost; reconnecting");
            shared.status.waiting(e);
            match connect_sftp(config, claim_dir.as_deref(), &shared.status, &shutdown).await {
                Some(c) => {
                    sftp = c;
                    connection += 1;
                    shared.status.set_state(State::Running);
                }
                None => break,
            }
        }
        while jobs.len() < config.tasks {
            let Some(n) = queue.pop_front() else { break };
            if !in_flight.insert(n.name.clone()) {
                continue;
            }
            let shared = shared.clone();
            let sftp = sftp.clone();
            let name = n.name.clone();
            let used = connection;
            let job = jobs.spawn(async move {
                let outcome = match shared.claims() {
                    None => {
                        let path = join(&shared.config.input_path, &n.name);
                        process_file(&shared, &sftp, &n.name, &path, &n.traceparent).await
                    }
                    Some(claims) => process_claimed(&shared, &sftp, claims, &n).await,
                };
                (n.name, used, outcome)
            });
            job_files.insert(job.id(), name);
        }
    }
    if !jobs.is_empty() {
        tracing::info!(files = jobs.len(), "waiting for files in flight");
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "files still in flight at shutdown are left in the input (or claim) directory"
            );
            jobs.abort_all();
        }
    }
    if let Some(claims) = shared.claims() {
        // Aborted jobs let go of their files (and holds) first.
        while jobs.join_next().await.is_some() {}
        // Bounded: a server that does not answer must not hold up the stop;
        // what stays is resumed by this worker or taken over once it is gone.
        let released = tokio::time::timeout(
            RELEASE_TIMEOUT,
            claims.release(&sftp, &config.input_path, |n| wanted(config, n)),
        )
        .await;
        match released {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(files = n, "claims handed back to the input directory"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot hand the claims back; this worker resumes them, or another once it is gone")
            }
            Err(_) => tracing::warn!(
                "handing the claims back took too long; this worker resumes them, or another once it is gone"
            ),
        }
    }
}

/// Distributed mode: queues the files of this worker's claim directory, and
/// those of workers missing from the live set for [`claims::TAKEOVER_GRACE`]
/// (`missing_since` remembers since when each was seen missing).
fn queue_claims(
    config: &SourceConfig,
    survey: claims::Survey,
    missing_since: &mut HashMap<String, std::time::Instant>,
    queue: &mut VecDeque<Notice>,
    in_flight: &HashSet<String>,
) {
    for name in survey.own.into_iter().filter(|n| wanted(config, n)) {
        enqueue(
            queue,
            in_flight,
            notice(name, String::new(), Origin::Claimed),
        );
    }
    let now = std::time::Instant::now();
    missing_since.retain(|w, _| survey.orphans.iter().any(|(dead, _)| dead == w));
    for (dead, name) in survey.orphans {
        let since = *missing_since.entry(dead.clone()).or_insert(now);
        if now.duration_since(since) >= claims::TAKEOVER_GRACE && wanted(config, &name) {
            enqueue(
                queue,
                in_flight,
                notice(name, String::new(), Origin::Orphan(dead)),
            );
        }
    }
}

fn notice(name: String, traceparent: String, origin: Origin) -> Notice {
    Notice {
        name,
        traceparent,
        origin,
    }
}

/// Queues a file unless a file of its name is queued or in flight already; a
/// notice's trace context is kept even when a poll queued the file first. (A
/// name queued from one place waits there for the next poll to be queued
/// from another.)
fn enqueue(queue: &mut VecDeque<Notice>, in_flight: &HashSet<String>, n: Notice) {
    if in_flight.contains(&n.name) {
        return;
    }
    if let Some(q) = queue.iter_mut().find(|q| q.name == n.name) {
        if q.traceparent.is_empty() {
            q.traceparent = n.traceparent;
        }
        return;
    }
    queue.push_back(n);
}

/// A name the source processes: not hidden (uploads in progress), matching
/// `input.file.pattern`.
fn wanted(config: &SourceConfig, name: &str) -> bool {
    !naming::is_hidden(name) && config.pattern.is_match(name)
}

/// The files of the input directory ready to be processed.
async fn scan(
    sftp: &SftpClient,
    config: &SourceConfig,
    min_age: Duration,
    left_alone: &std::collections::BTreeMap<String, FileStat>,
) -> Result<Vec<String>, SftpError> {
    let entries = sftp.list(&config.input_path).await?;
    let now = u64::try_from(etl_core::time::now_unix_ms()).unwrap_or(0);
    let min_age = min_age.as_millis() as u64;
    Ok(entries
        .into_iter()
        .filter(|e| !e.is_dir && wanted(config, &e.name))
        .filter(|e| {
            min_age == 0
                || e.modified_unix
                    .is_some_and(|m| now.saturating_sub(m * 1000) >= min_age)
        })
        .filter(|e| left_alone.get(&e.name) != Some(&(e.size, e.modified_unix)))
        .map(|e| e.name)
        .collect())
}

fn join(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

/// Distributed mode: claims the file for this worker (or takes it over from
/// a dead one), then processes it from the claim directory. A file another
/// worker or task has, or one sent already and put back
/// (`cleanup.policy=NONE`), is left alone.
async fn process_claimed(
    shared: &Shared,
    sftp: &SftpClient,
    claims: &Claims,
    n: &Notice,
) -> Outcome {
    let config = &shared.config;
    let name = n.name.as_str();
    let Some(_hold) = claims.hold(name) else {
        tracing::debug!(file = %name, "another task of this worker has the file");
        return Outcome::Gone;
    };
    let claimed = match &n.origin {
        Origin::Input => {
            let input = join(&config.input_path, name);
            if config.cleanup == Cleanup::None {
                // Sent and put back by some worker: claiming it would only
                // move it back and forth (and have the gateway announce it
                // again each time).
                let stat = match sftp.stat(&input).await {
                    Ok(s) => (s.size, s.modified_unix),
                    Err(e) => return sftp_outcome(e),
                };
                match already_sent(shared, name, stat).await {
                    Ok(true) => return Outcome::Gone,
                    Ok(false) => {}
                    Err(e) => return Outcome::Retry(format!("file {name}: {e}")),
                }
            }
            claims.claim(sftp, &config.input_path, name).await
        }
        Origin::Claimed => Ok(Claim::Won),
        Origin::Orphan(dead) => claims.take_over(sftp, dead, name).await,
    };
    match claimed {
        Ok(Claim::Won) => {}
        Ok(Claim::Lost) => return Outcome::Gone,
        Ok(Claim::Busy) => {
            tracing::debug!(file = %name, "an earlier file of this name is still claimed; this one waits for it");
            return Outcome::Gone;
        }
        Err(e) => return sftp_outcome(e),
    }
    let path = claims.path(name);
    if config.cleanup == Cleanup::None && n.origin != Origin::Input {
        // A claim left by a put-back that failed, or by a worker that died
        // between recording the file and putting it back.
        let stat = match sftp.stat(&path).await {
            Ok(s) => (s.size, s.modified_unix),
            Err(e) => return sftp_outcome(e),
        };
        match already_sent(shared, name, stat).await {
            Ok(true) => {
                return match put_back(sftp, config, name, &path).await {
                    Ok(()) => Outcome::Gone,
                    Err(e) => sftp_outcome(e),
                };
            }
            Ok(false) => {}
            Err(e) => return Outcome::Retry(format!("file {name}: {e}")),
        }
    }
    process_file(shared, sftp, name, &path, &n.traceparent).await
}

/// Whether `name` was sent as it is now (`stat`), by any worker: the offset
/// topic is read first.
async fn already_sent(shared: &Shared, name: &str, stat: FileStat) -> Result<bool, String> {
    let mut state = shared.state.lock().await;
    shared.store.refresh(&mut state).await?;
    Ok(state.sent.get(name) == Some(&stat))
}

/// `cleanup.policy=NONE` in distributed mode: the claimed file (sent and
/// recorded) goes back to the input directory, where it stays. When a new
/// file of that name was uploaded meanwhile, that one stays and ours (sent
/// already) is removed, as an upload over the file would have replaced it.
async fn put_back(
    sftp: &SftpClient,
    config: &SourceConfig,
    name: &str,
    claimed: &str,
) -> Result<(), SftpError> {
    let input = join(&config.input_path, name);
    if sftp.exists(&input).await? {
        tracing::info!(file = %name, "a new file of this name was uploaded while it was sent; it stays, the sent one is removed");
        return sftp.remove(claimed).await;
    }
    sftp.rename(claimed, &input).await
}

/// Reads, parses, produces and cleans up one file (at `path`: in the input
/// directory, or in distributed mode in this worker's claim directory),
/// inside a `source.file` span that joins the file's trace. The trace context
/// comes with the gateway's notice or, for a file found by a scan or the
/// poll, from the server itself: sftp-gateway keeps each upload's traceparent
/// with the file (an extended attribute, which follows it through renames,
/// into the claim directory too) and answers the `traceparent@file-etl` SFTP
/// extension. A server without it (OpenSSH) answers "unsupported", and the
/// file's trace starts here.
async fn process_file(
    shared: &Shared,
    sftp: &SftpClient,
    name: &str,
    path: &str,
    tp: &str,
) -> Outcome {
    let span = tracing::info_span!("source.file", etl.file = %name, etl.rows = Empty);
    let looked_up;
    let tp = if tp.is_empty() {
        looked_up = match sftp.traceparent(path).await {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(file = %name, error = %e, "no trace context from the server");
                String::new()
            }
        };
        looked_up.as_str()
    } else {
        tp
    };
    etl_telemetry::context::set_parent(&span, tp);
    process_file_inner(shared, sftp, name, path)
        .instrument(span)
        .await
}

fn sftp_outcome(e: SftpError) -> Outcome {
    if e.is_not_found() {
        Outcome::Gone
    } else if e.is_connection() {
        Outcome::Reconnect(e.to_string())
    } else {
        Outcome::Retry(e.to_string())
    }
}

async fn process_file_inner(shared: &Shared, sftp: &SftpClient, name: &str, path: &str) -> Outcome {
    let config = &shared.config;
    let started = std::time::Instant::now();
    let data = match sftp.read(path).await {
        Ok(d) => d,
        Err(e) => return sftp_outcome(e),
    };
    // Line numbers in reasons count from the first line read.
    let skipped = |reason: String| {
        if config.skip_lines == 0 {
            reason
        } else {
            format!(
                "{reason} (lines counted after the {} skipped by csv.skip.lines)",
                config.skip_lines
            )
        }
    };
    let body = skip_lines(&data, config.skip_lines);
    let delimiter = config
        .delimiter
        .unwrap_or_else(|| table::detect_delimiter(body));
    let table = match table::parse(body, delimiter) {
        Ok(t) => t,
        Err(e) => return reject(sftp, config, name, path, &skipped(e.to_string())).await,
    };
    drop(data);
    let rows = table.rows.len() as u64;
    if rows == 0 {
        let reason = format!(
            "line 1: the file has a header ({} columns) but no data row",
            table.header.len()
        );
        return reject(sftp, config, name, path, &skipped(reason)).await;
    }
    tracing::Span::current().record("etl.rows", rows);
    // Checked before anything is sent, so no row of a file that cannot go through
    // Kafka whole reaches the table.
    if let Some((row, bytes)) = table
        .rows
        .iter()
        .map(|r| r.iter().map(String::len).sum::<usize>())
        .enumerate()
        .find(|(_, bytes)| *bytes > MAX_ROW_BYTES)
    {
        let reason = format!(
            "data row {}: {bytes} bytes, above the {MAX_ROW_BYTES} bytes a row may have to fit in one Kafka record",
            row + 1
        );
        return reject(sftp, config, name, path, &reason).await;
    }
    let fitted = match fit_schema(shared, name, &table).await {
        Ok(s) => s,
        Err(Fit::Reject(reason)) => return reject(sftp, config, name, path, &reason).await,
        Err(Fit::Retry(e)) => return Outcome::Retry(format!("file {name}: {e}")),
    };
    if let Err(e) = produce(shared, name, table.rows, &fitted).await {
        if let KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) = e {
            // Sending it again would fail again: the file cannot go through Kafka.
            let reason = format!(
                "a row is larger than the broker accepts for one record ({e}); split the file's long values or raise the topic's max.message.bytes"
            );
            return reject(sftp, config, name, path, &reason).await;
        }
        renew_if_fatal(shared);
        return Outcome::Retry(format!("file {name}: {e}"));
    }
    let stat = match sftp.stat(path).await {
        Ok(s) => (s.size, s.modified_unix),
        Err(e) => return sftp_outcome(e),
    };
    let cleaned = match config.cleanup {
        Cleanup::Move => sftp.rename(path, &join(&config.finished_path, name)).await,
        Cleanup::Delete => sftp.remove(path).await,
        Cleanup::None if shared.cluster.is_none() => Ok(()),
        Cleanup::None => {
            // Recorded before it is put back, so no worker's scan that sees it
            // in input/ again takes it for a new file.
            let mut state = shared.state.lock().await;
            if let Err(e) = shared.store.record_sent(&mut state, name, stat).await {
                return Outcome::Retry(format!(
                    "file {name}: sent, but not recorded as sent ({e}); it stays claimed and is sent again"
                ));
            }
            drop(state);
            put_back(sftp, config, name, path).await
        }
    };
    if let Err(e) = cleaned {
        return sftp_outcome(e);
    }
    tracing::info!(file = %name, rows, elapsed_ms = started.elapsed().as_millis() as u64, "file sent");
    Outcome::Finished {
        records: rows,
        stat,
    }
}

/// `data` without its first `n` lines (`csv.skip.lines`); empty when it has fewer.
fn skip_lines(data: &[u8], n: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..n {
        match data[at..].iter().position(|b| *b == b'\n') {
            Some(i) => at += i + 1,
            None => return &[],
        }
    }
    &data[at..]
}

/// Moves a file that does not parse (at `path`) to error/, with
/// `<name>.error.txt` beside it.
async fn reject(
    sftp: &SftpClient,
    config: &SourceConfig,
    name: &str,
    path: &str,
    reason: &str,
) -> Outcome {
    if config.on_error == OnError::Ignore {
        tracing::debug!(file = %name, %reason, "file rejected");
    } else {
        tracing::warn!(file = %name, %reason, "file rejected");
    }
    let text = format!(
        "{name}: {reason}\nThe file was not sent to Kafka. Fix it and upload it again to {}/.\n",
        config.input_path
    );
    let reason_name = naming::error_reason_name(name);
    if let Err(e) = sftp
        .write_atomic(&config.error_path, &reason_name, text.as_bytes())
        .await
    {
        return sftp_outcome(e);
    }
    match sftp.rename(path, &join(&config.error_path, name)).await {
        Ok(()) => Outcome::Rejected(reason.to_string()),
        Err(e) => sftp_outcome(e),
    }
}

/// The record schema of a parsed file: its header with the inferred types.
pub(crate) fn file_schema(schema_name: &str, table: &Table) -> Schema {
    let types = infer_columns(table.header.len(), &table.rows);
    Schema {
        name: schema_name.to_string(),
        fields: table
            .header
            .iter()
            .zip(types)
            .map(|(name, ty)| Field {
                name: name.clone(),
                ty,
                optional: true,
            })
            .collect(),
    }
}

/// Replaces the producer when it is in a fatal state; the file is then sent
/// again, whole, by a new one.
fn renew_if_fatal(shared: &Shared) {
    use rdkafka::producer::Producer as _;
    let Ok(mut producer) = shared.producer.lock() else {
        return;
    };
    if let Some((code, reason)) = producer.client().fatal_error() {
        tracing::warn!(?code, %reason, "Kafka producer failed for good; starting a new one");
        match kafka::producer(&shared.brokers) {
            Ok(p) => *producer = p,
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
    }
}

/// Why a file's schema does not do.
enum Fit {
    /// The file does not fit the pinned schema: to error/, with this reason.
    Reject(String),
    /// The state could not be saved: leave the file, try again.
    Retry(String),
}

/// A file's record schema, and how its rows become values of it.
#[derive(Debug)]
struct Fitted {
    schema: Schema,
    /// Per field of `schema`, the file column it is read from (None: absent, null).
    columns: Vec<Option<usize>>,
    /// Values are parsed against a declared type (`value.schema`), not an inferred one.
    declared: bool,
    /// `csv.null.field.indicator=BOTH`: an empty field is null, in text columns too.
    empty_is_null: bool,
}

impl Fitted {
    /// Fields in file order, each read from its own column.
    fn in_order(schema: Schema, empty_is_null: bool) -> Self {
        Self {
            columns: (0..schema.fields.len()).map(Some).collect(),
            schema,
            declared: false,
            empty_is_null,
        }
    }

    /// The values of one row, in schema field order. Every value fits: the
    /// file was checked against the schema (or inferred from) before.
    #[cfg(test)]
    fn values(&self, row: &[String]) -> Vec<Value> {
        self.values_taken(row.to_vec(), &self.takes())
    }

    /// Per field, whether its value may take its column's string out of the
    /// row: a text field that is the last one read from its column.
    fn takes(&self) -> Vec<bool> {
        self.schema
            .fields
            .iter()
            .zip(&self.columns)
            .enumerate()
            .map(|(i, (f, c))| {
                f.ty == FieldType::String && c.is_some() && !self.columns[i + 1..].contains(c)
            })
            .collect()
    }

    /// [`Fitted::values`] of a row that is not needed after: a text value in
    /// `takes` ([`Fitted::takes`]) moves its column's string instead of
    /// copying it, an allocation and a copy fewer per text field of every
    /// record sent.
    fn values_taken(&self, mut row: Vec<String>, takes: &[bool]) -> Vec<Value> {
        let mut values = self.values_except(&row, takes);
        for ((value, c), take) in values.iter_mut().zip(&self.columns).zip(takes) {
            if let (true, Some(c)) = (*take, c)
                && let Some(s) = row.get_mut(*c)
                && !(s.is_empty() && self.empty_is_null)
            {
                *value = Value::Text(std::mem::take(s));
            }
        }
        values
    }

    /// [`Fitted::values`], with Null in place of the fields in `takes`.
    fn values_except(&self, row: &[String], takes: &[bool]) -> Vec<Value> {
        self.schema
            .fields
            .iter()
            .zip(&self.columns)
            .zip(takes)
            .map(|((f, c), take)| match c.and_then(|c| row.get(c)) {
                None => Value::Null,
                Some(_) if *take => Value::Null,
                Some(s) => self.value(s, f.ty),
            })
            .collect()
    }

    fn value(&self, s: &str, ty: FieldType) -> Value {
        if s.is_empty() && self.empty_is_null {
            Value::Null
        } else if self.declared {
            parse_declared(s, ty).unwrap_or_else(|| Value::Text(s.to_string()))
        } else {
            parse_value(s, ty).unwrap_or_else(|| Value::Text(s.to_string()))
        }
    }
}

/// The schema a file's records are sent with. With `value.schema`, that one:
/// each field read from the column of its name (columns it does not name are
/// not sent, as in Confluent's connector). Otherwise the first file pins its
/// inferred schema (saved before any record is sent); every later file must
/// have the same columns, each value parsing as the pinned type, and is sent
/// with the pinned types, so the topic's schema (and the sink's table) stays
/// stable. With `etl.schema.evolve=true` each file is sent with its own
/// inferred schema and the sink may add and widen columns.
async fn fit_schema(shared: &Shared, name: &str, table: &Table) -> Result<Fitted, Fit> {
    let config = &shared.config;
    if let Some(declared) = &config.value_schema {
        return fit_declared(table, declared, config.empty_is_null).map_err(Fit::Reject);
    }
    let fitted = |schema| Fitted::in_order(schema, config.empty_is_null);
    let inferred = file_schema(&config.schema_name, table);
    if config.schema_evolve {
        return Ok(fitted(inferred));
    }
    let mut state = shared.state.lock().await;
    if state.schema.is_none() {
        // Another worker's task may have pinned one since this task read the state.
        shared.store.refresh(&mut state).await.map_err(Fit::Retry)?;
    }
    let pinned = match state.schema.clone() {
        Some(pinned) => pinned,
        None => {
            let mine = PinnedSchema::of(name, &inferred);
            let pinned = shared
                .store
                .pin(&mut state, mine.clone())
                .await
                .map_err(Fit::Retry)?;
            if pinned == mine {
                tracing::info!(file = %name, columns = inferred.fields.len(), "schema pinned by the first file");
                return Ok(fitted(inferred));
            }
            tracing::info!(file = %name, pinned_by = %pinned.from_file, "another worker pinned the schema first");
            pinned
        }
    };
    drop(state);
    let schema = pinned
        .schema(&config.schema_name)
        .ok_or_else(|| Fit::Retry(shared.store.unknown_type_hint()))?;
    check_fits(table, &schema, &pinned.from_file).map_err(Fit::Reject)?;
    Ok(fitted(schema))
}

/// Every field of `value.schema` read from the column of its name; every value
/// must convert to the field's type, and a field that is not optional must
/// have a column and no empty (null) value in a typed column.
fn fit_declared(table: &Table, schema: &Schema, empty_is_null: bool) -> Result<Fitted, String> {
    let columns: Vec<Option<usize>> = schema
        .fields
        .iter()
        .map(|f| table.header.iter().position(|h| *h == f.name))
        .collect();
    for (f, c) in schema.fields.iter().zip(&columns) {
        if c.is_none() && !f.optional {
            return Err(format!(
                "line 1: the header has no column {:?}, which value.schema declares not optional",
                f.name
            ));
        }
    }
    let unused: Vec<&str> = table
        .header
        .iter()
        .enumerate()
        .filter(|(i, _)| !columns.contains(&Some(*i)))
        .map(|(_, h)| h.as_str())
        .collect();
    if !unused.is_empty() {
        tracing::info!(columns = ?unused, "columns value.schema does not declare are not sent");
    }
    for (i, row) in table.rows.iter().enumerate() {
        for (f, c) in schema.fields.iter().zip(&columns) {
            let Some(s) = c.and_then(|c| row.get(c)) else {
                continue;
            };
            let value = if s.is_empty() && empty_is_null {
                Some(Value::Null)
            } else {
                parse_declared(s, f.ty)
            };
            let problem = match value {
                None => format!(
                    "holds {:?}, which is not a {}",
                    truncate(s, 40),
                    f.ty.connect_type()
                ),
                Some(Value::Null) if !f.optional => {
                    "is empty (null) where the field is not optional".to_string()
                }
                Some(_) => continue,
            };
            return Err(format!(
                "data row {}: column {:?} {problem} as value.schema declares it",
                i + 1,
                f.name
            ));
        }
    }
    Ok(Fitted {
        schema: schema.clone(),
        columns,
        declared: true,
        empty_is_null,
    })
}

/// Same columns in the same order, and every value parses as its column's type.
fn check_fits(table: &Table, schema: &Schema, pinned_by: &str) -> Result<(), String> {
    let expected: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
    let got: Vec<&str> = table.header.iter().map(String::as_str).collect();
    if got != expected {
        let differs = expected
            .iter()
            .zip(&got)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(got.len()));
        let what = match (expected.get(differs), got.get(differs)) {
            (Some(e), Some(g)) => {
                format!("column {} is {g:?} where the schema has {e:?}", differs + 1)
            }
            (Some(e), None) => format!("column {e:?} is missing"),
            (None, Some(g)) => format!("column {g:?} is not in the schema"),
            (None, None) => "the columns differ".to_string(),
        };
        return Err(format!(
            "line 1: the header does not fit the topic's schema ({what}); expected {expected:?} as pinned by {pinned_by} (set etl.schema.evolve=true on the source connector to allow changes)"
        ));
    }
    for (i, row) in table.rows.iter().enumerate() {
        for (value, field) in row.iter().zip(&schema.fields) {
            if !value.is_empty() && parse_value(value, field.ty).is_none() {
                return Err(format!(
                    "data row {}: column {:?} holds {:?}, which is not a {} as the topic's schema requires (pinned by {pinned_by}); set etl.schema.evolve=true on the source connector to allow type changes",
                    i + 1,
                    field.name,
                    truncate(value, 40),
                    field.ty.connect_type(),
                ));
            }
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Sends one record per row and waits until every one is acknowledged.
/// Sends `rows` (a file's data rows, in order) as records of `fitted`'s schema.
async fn produce(
    shared: &Shared,
    name: &str,
    rows: Vec<Vec<String>>,
    fitted: &Fitted,
) -> Result<(), KafkaError> {
    let schema = &fitted.schema;
    let config = &shared.config;
    let producer = match shared.producer.lock() {
        Ok(p) => p.clone(),
        Err(_) => return Err(KafkaError::Canceled),
    };
    let encoder = Encoder::new(schema);
    let run = naming::parse_chunk_file_name(name)
        .map(|(run, _, _)| run)
        .unwrap_or("");
    let span = tracing::info_span!(
        "send",
        otel.name = %format!("send {}", config.topic),
        otel.kind = "producer",
        { names::MESSAGING_SYSTEM } = "kafka",
        { names::MESSAGING_DESTINATION } = %config.topic,
        { names::MESSAGING_OPERATION_TYPE } = "send",
        { names::MESSAGING_BATCH_COUNT } = rows.len() as u64,
    );
    let takes = fitted.takes();
    let traceparent = etl_telemetry::context::traceparent_of(&span).unwrap_or_default();
    async {
        let mut pending = FuturesUnordered::new();
        for (i, row) in rows.into_iter().enumerate() {
            let n = i as u64 + 1;
            // batch.size: at most that many records awaiting acknowledgement.
            if let Some(max) = config.in_flight {
                while pending.len() >= max {
                    match pending.next().await {
                        Some(d) => delivered(d)?,
                        None => break,
                    }
                }
            }
            let values = fitted.values_taken(row, &takes);
            let payload = encoder.encode(&values);
            let key = record_key(name, n);
            let row_text = n.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(4);
            if !traceparent.is_empty() {
                headers = headers.insert(Header {
                    key: names::HEADER_TRACEPARENT,
                    value: Some(traceparent.as_str()),
                });
            }
            let headers = headers
                .insert(Header {
                    key: names::HEADER_FILE,
                    value: Some(name),
                })
                .insert(Header {
                    key: names::HEADER_ROW,
                    value: Some(row_text.as_str()),
                })
                .insert(Header {
                    key: names::HEADER_RUN,
                    value: Some(run),
                });
            let mut record = FutureRecord::to(&config.topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        // Make room: wait for an earlier record's acknowledgement.
                        match pending.next().await {
                            Some(d) => delivered(d)?,
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        while let Some(d) = pending.next().await {
            delivered(d)?;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

fn delivered(
    d: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<(), KafkaError> {
    match d {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use etl_core::FieldType;

    use super::*;

    fn table(header: &[&str], rows: &[&[&str]]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .collect(),
        }
    }

    fn field(name: &str, ty: FieldType, optional: bool) -> Field {
        Field {
            name: name.into(),
            ty,
            optional,
        }
    }

    #[test]
    fn skip_lines_drops_whole_lines() {
        assert_eq!(skip_lines(b"a\nb\nc\n", 0), b"a\nb\nc\n");
        assert_eq!(skip_lines(b"a\nb\nc\n", 2), b"c\n");
        assert_eq!(skip_lines(b"a\nb", 2), b"");
        assert_eq!(skip_lines(b"a", 1), b"");
    }

    #[test]
    fn python_booleans_fit_a_pinned_boolean_column() {
        let pinned = Schema {
            name: "review".into(),
            fields: vec![field("is_streaming", FieldType::Boolean, true)],
        };
        let t = table(
            &["is_streaming"],
            &[&["false"], &["False"], &["TRUE"], &[""]],
        );
        check_fits(&t, &pinned, "first.csv").expect("Python's spelling fits");
        let values: Vec<Vec<Value>> = t
            .rows
            .iter()
            .map(|r| Fitted::in_order(pinned.clone(), false).values(r))
            .collect();
        assert_eq!(
            values,
            vec![
                vec![Value::Bool(false)],
                vec![Value::Bool(false)],
                vec![Value::Bool(true)],
                vec![Value::Null],
            ]
        );
        let bad = table(&["is_streaming"], &[&["false"], &["yes"]]);
        let err = check_fits(&bad, &pinned, "first.csv").expect_err("not a boolean");
        assert!(
            err.contains("data row 2") && err.contains("\"yes\""),
            "{err}"
        );
        // Inference agrees: a file of Python booleans is a boolean column.
        assert_eq!(file_schema("review", &t).fields[0].ty, FieldType::Boolean);
    }

    #[test]
    fn a_declared_schema_wins_over_inference() {
        let declared = Schema {
            name: "review".into(),
            fields: vec![
                field("n", FieldType::Int64, false),
                field("flag", FieldType::Boolean, true),
                field("absent", FieldType::String, true),
                field("code", FieldType::String, true),
            ],
        };
        // `code` would infer as an integer and `n` as text ("007" is not lossless).
        let t = table(
            &["code", "n", "extra", "flag"],
            &[&["1", "007", "x", "False"], &["2", "8", "y", ""]],
        );
        let fitted = fit_declared(&t, &declared, false).expect("fits");
        assert_eq!(
            fitted.values(&t.rows[0]),
            vec![
                Value::Int(7),
                Value::Bool(false),
                Value::Null,
                Value::Text("1".into())
            ]
        );
        assert_eq!(fitted.values(&t.rows[1])[1], Value::Null);

        let bad = table(&["n", "flag"], &[&["1", "true"], &["x", "true"]]);
        let err = fit_declared(&bad, &declared, false).expect_err("not an int64");
        assert!(
            err.contains("data row 2") && err.contains("\"n\"") && err.contains("int64"),
            "{err}"
        );
        let missing = table(&["flag"], &[&["true"]]);
        let err = fit_declared(&missing, &declared, false).expect_err("n is required");
        assert!(err.contains("no column \"n\""), "{err}");
        let null = table(&["n"], &[&[""]]);
        let err = fit_declared(&null, &declared, false).expect_err("n is not optional");
        assert!(err.contains("not optional"), "{err}");
    }

    /// Distributed mode end to end, without the registry: each worker is a
    /// source task given a `TaskCluster`, against our gateway and Kafka.
    mod distributed {
        use std::{
            collections::{BTreeMap, BTreeSet, HashMap},
            path::Path,
            sync::Arc,
            time::{Duration, Instant},
        };

        use etl_service::Shutdown;
        use rdkafka::{
            ClientConfig, Message, Offset, TopicPartitionList,
            consumer::{BaseConsumer, Consumer},
            error::KafkaError,
        };
        use tokio::{sync::watch, task::JoinHandle};

        use super::super::{
            SourceConfig, claims::tests::Gateway, offsets::load_source_offsets, run,
        };
        use crate::{
            cluster::TaskCluster, connector::TaskContext, options::Options, status::Status,
        };

        const WAIT: Duration = Duration::from_secs(60);

        struct Worker {
            shutdown: Shutdown,
            task: JoinHandle<()>,
            status: Arc<Status>,
            _data: tempfile::TempDir,
        }

        impl Worker {
            async fn stop(self) {
                self.shutdown.trigger();
                tokio::time::timeout(Duration::from_secs(20), self.task)
                    .await
                    .expect("the source stops in time")
                    .expect("the source task ends cleanly");
            }
        }

        struct Cluster {
            gw: Gateway,
            brokers: String,
            topic: String,
            offset_topic: String,
            live: watch::Sender<BTreeSet<String>>,
        }

        impl Cluster {
            async fn start(live: &[&str]) -> Self {
                let brokers = tokio::task::spawn_blocking(|| {
                    testkit::shared_broker()
                        .expect("the shared Kafka broker starts")
                        .bootstrap()
                })
                .await
                .expect("join");
                Self {
                    gw: Gateway::start().await,
                    brokers,
                    topic: testkit::unique_name("review-etl"),
                    offset_topic: testkit::unique_name("connect-offsets"),
                    live: watch::Sender::new(live.iter().map(|s| s.to_string()).collect()),
                }
            }

            fn config(&self, extra: &[(&str, &str)]) -> SourceConfig {
                let port = self.gw.running.sftp_addr.port().to_string();
                let mut map: BTreeMap<String, String> = [
                    ("connector.class", "SftpCsvSourceConnector"),
                    ("kafka.topic", self.topic.as_str()),
                    ("sftp.host", "127.0.0.1"),
                    ("sftp.port", port.as_str()),
                    ("sftp.username", "etl"),
                    ("sftp.password", "etl"),
                    // What the registry gives each task in distributed mode.
                    ("tasks.max", "1"),
                    ("file.poll.interval.ms", "100"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                for (k, v) in extra {
                    map.insert(k.to_string(), v.to_string());
                }
                SourceConfig::from_options("src", &Options::new("src", &map)).expect("config")
            }

            fn worker(&self, id: &str, config: SourceConfig) -> Worker {
                let (status, shutdown) = (Arc::new(Status::default()), Shutdown::new());
                let data = tempfile::tempdir().expect("tempdir");
                let ctx = TaskContext {
                    name: "src".into(),
                    task: 0,
                    brokers: self.brokers.clone(),
                    status: status.clone(),
                    shutdown: shutdown.clone(),
                    instance: id.into(),
                    data_dir: data.path().to_path_buf(),
                    client: etl_service::ClientAuth::none(),
                    cluster: Some(TaskCluster {
                        worker: id.into(),
                        live: self.live.subscribe(),
                        brokers: self.brokers.clone(),
                        offset_topic: self.offset_topic.clone(),
                    }),
                };
                Worker {
                    task: tokio::spawn(run(config, ctx)),
                    shutdown,
                    status,
                    _data: data,
                }
            }

            fn local(&self, rel: &str) -> std::path::PathBuf {
                self.gw.root.join(rel)
            }

            /// Every record key in the topic, in no particular order.
            async fn keys(&self) -> Vec<String> {
                let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
                tokio::task::spawn_blocking(move || record_keys(&brokers, &topic))
                    .await
                    .expect("join")
            }
        }

        /// Blocking: the keys of every record of `topic` (none when it is missing).
        fn record_keys(brokers: &str, topic: &str) -> Vec<String> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                // assign() needs a group id; it never joins nor commits.
                .set("group.id", "source-test-reader")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("fetch.wait.max.ms", "10")
                .create()
                .expect("consumer");
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata");
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition_offset(topic, *p, Offset::Beginning)
                    .expect("partition");
            }
            consumer.assign(&tpl).expect("assign");
            let mut open: BTreeSet<i32> = partitions.into_iter().collect();
            let mut keys = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !open.is_empty() {
                assert!(Instant::now() < deadline, "{topic} not read to its end");
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        open.remove(&p);
                    }
                    Some(Err(e)) => panic!("reading {topic}: {e}"),
                    None => {}
                }
            }
            keys
        }

        /// Asserts each key appears once, and returns how many there are.
        fn once_each(keys: &[String]) -> usize {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for k in keys {
                *seen.entry(k).or_default() += 1;
            }
            let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "records sent more than once: {twice:?}");
            seen.len()
        }

        fn files_in(dir: &Path) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.path().is_file())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        }

        async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
            let deadline = Instant::now() + WAIT;
            while !ok() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        fn csv(rows: usize, seed: usize) -> Vec<u8> {
            let mut s = String::from("n\tword\n");
            for r in 0..rows {
                s.push_str(&format!("{}\tw{seed}x{r}\n", seed * 100 + r));
            }
            s.into_bytes()
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_workers_share_an_input_directory_and_send_each_file_once() {
            let c = Cluster::start(&["w1", "w2"]).await;
            let sftp = c.gw.client().await;
            let w1 = c.worker("w1", c.config(&[]));
            let w2 = c.worker("w2", c.config(&[]));
            for i in 0..16 {
                sftp.write_atomic("input", &format!("f{i:02}.csv"), &csv(3, i))
                    .await
                    .expect("upload");
            }
            eventually("16 files in finished/", || {
                files_in(&c.local("finished")).len() == 16
            })
            .await;
            assert_eq!(once_each(&c.keys().await), 48);
            assert!(files_in(&c.local("input")).is_empty());
            for w in ["w1", "w2"] {
                assert!(
                    files_in(&c.local(&format!("input/.claims/{w}"))).is_empty(),
                    "{w}"
                );
            }
            let sent = w1.status.snapshot().files_finished + w2.status.snapshot().files_finished;
            assert_eq!(sent, 16);
            w1.stop().await;
            w2.stop().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_dead_workers_claims_are_sent_by_a_live_one_and_not_before() {
            let c = Cluster::start(&["w1", "wdead"]).await;
            let sftp = c.gw.client().await;
            for (dir, name, seed) in [
                ("input/.claims/wdead", "d1.csv", 1),
                ("input/.claims/wdead", "d2.csv", 2),
                ("input/.claims/wdead", "d3.csv", 3),
                // A claim of this worker left by its previous life: resumed.
                ("input/.claims/w1", "mine.csv", 4),
            ] {
                sftp.mkdir_all(dir).await.expect("claim dir");
                sftp.write(&format!("{dir}/{name}"), &csv(2, seed))
                    .await
                    .expect("write");
            }
            let w1 = c.worker("w1", c.config(&[]));
            eventually("the resumed claim in finished/", || {
                files_in(&c.local("finished")) == ["mine.csv"]
            })
            .await;
            // Many polls while the owner is live: its claims stay where they are.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(files_in(&c.local("input/.claims/wdead")).len(), 3);
            assert_eq!(once_each(&c.keys().await), 2);

            c.live.send_replace(["w1".to_string()].into());
            eventually("the dead worker's files in finished/", || {
                files_in(&c.local("finished")).len() == 4
            })
            .await;
            assert!(files_in(&c.local("input/.claims/wdead")).is_empty());
            assert!(files_in(&c.local("input/.claims/w1")).is_empty());
            assert_eq!(once_each(&c.keys().await), 8);
            w1.stop().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn with_cleanup_none_files_are_sent_once_put_back_and_recorded_in_the_offset_topic() {
            let c = Cluster::start(&["w1", "w2"]).await;
            let sftp = c.gw.client().await;
            // With the gateway's notices: putting a file back announces it again,
            // and no worker may take that for a new file.
            let gateway = format!("http://{}", c.gw.running.grpc_addr);
            let config = c.config(&[("cleanup.policy", "NONE"), ("etl.gateway.url", &gateway)]);
            let w1 = c.worker("w1", config.clone());
            let w2 = c.worker("w2", config);
            for i in 0..6 {
                sftp.write_atomic("input", &format!("n{i}.csv"), &csv(3, i))
                    .await
                    .expect("upload");
            }
            let (brokers, offsets) = (c.brokers.clone(), c.offset_topic.clone());
            let deadline = Instant::now() + WAIT;
            let state = loop {
                let state = load_source_offsets(&brokers, &offsets, "src")
                    .await
                    .expect("offsets");
                if state.sent.len() == 6 {
                    break state;
                }
                assert!(Instant::now() < deadline, "6 files recorded: {state:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            eventually("every file back in input/", || {
                files_in(&c.local("input")).len() == 6
            })
            .await;
            for (name, (size, mtime)) in &state.sent {
                let meta = std::fs::metadata(c.local(&format!("input/{name}"))).expect("stat");
                assert_eq!(*size, meta.len(), "{name}");
                let local_mtime = meta
                    .modified()
                    .expect("mtime")
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs();
                assert_eq!(*mtime, Some(local_mtime), "{name}");
            }
            assert!(state.schema.is_some(), "the first file pinned the schema");
            // Many polls and notices later, nothing was sent again.
            tokio::time::sleep(Duration::from_millis(2000)).await;
            assert_eq!(once_each(&c.keys().await), 18);
            assert!(files_in(&c.local("finished")).is_empty());
            for w in ["w1", "w2"] {
                assert!(
                    files_in(&c.local(&format!("input/.claims/{w}"))).is_empty(),
                    "{w}"
                );
            }
            w1.stop().await;
            w2.stop().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn workers_send_with_the_schema_pinned_first_and_reject_what_does_not_fit() {
            let c = Cluster::start(&["w1", "w2"]).await;
            let sftp = c.gw.client().await;
            let w1 = c.worker("w1", c.config(&[]));
            let w2 = c.worker("w2", c.config(&[]));
            sftp.write_atomic("input", "a.csv", b"n\tword\n1\tx\n")
                .await
                .expect("upload");
            sftp.write_atomic("input", "b.csv", b"n\tother\n2\ty\n")
                .await
                .expect("upload");
            eventually("one file sent, one rejected", || {
                files_in(&c.local("finished")).len() == 1 && files_in(&c.local("error")).len() == 2
            })
            .await;
            let sent = files_in(&c.local("finished")).remove(0);
            let rejected = if sent == "a.csv" { "b.csv" } else { "a.csv" };
            let reason = std::fs::read_to_string(c.local(&format!("error/{rejected}.error.txt")))
                .expect("reason");
            assert!(reason.contains("the header does not fit"), "{reason}");
            assert!(reason.contains(&format!("pinned by {sent}")), "{reason}");
            let state = load_source_offsets(&c.brokers, &c.offset_topic, "src")
                .await
                .expect("offsets");
            assert_eq!(state.schema.map(|p| p.from_file), Some(sent));
            w1.stop().await;
            w2.stop().await;
        }
    }

    #[test]
    fn a_column_read_by_two_fields_gives_both_its_text() {
        let fitted = Fitted {
            schema: Schema {
                name: "t".into(),
                fields: vec![
                    field("t", FieldType::String, true),
                    field("n", FieldType::Int64, true),
                    field("t", FieldType::String, true),
                    field("gone", FieldType::String, true),
                ],
            },
            columns: vec![Some(0), Some(1), Some(0), None],
            declared: true,
            empty_is_null: false,
        };
        assert_eq!(fitted.takes(), [false, false, true, false]);
        let row = vec!["x".to_string(), "7".to_string()];
        assert_eq!(
            fitted.values_taken(row, &fitted.takes()),
            [
                Value::Text("x".into()),
                Value::Int(7),
                Value::Text("x".into()),
                Value::Null
            ]
        );
    }

    #[test]
    fn null_field_indicator_both_makes_every_empty_field_null() {
        let schema = Schema {
            name: "review".into(),
            fields: vec![field("body", FieldType::String, true)],
        };
        let row = vec![String::new()];
        assert_eq!(
            Fitted::in_order(schema.clone(), false).values(&row),
            vec![Value::Text(String::new())]
        );
        assert_eq!(
            Fitted::in_order(schema, true).values(&row),
            vec![Value::Null]
        );
    }
}
