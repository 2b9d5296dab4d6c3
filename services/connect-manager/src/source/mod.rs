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

pub(crate) mod config;
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
    Field, Schema, Value,
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
/// that they are abandoned (left in input/, sent again whole after a restart:
/// the sink's upsert makes the records already sent harmless). Below the 10 s
/// that supervisors (compose, etlctl) give a service between SIGTERM and SIGKILL.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
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
    /// No longer in input/ (another worker, or a poll that raced a move).
    Gone,
    /// Kafka or SFTP trouble: left in place, retried by a later poll.
    Retry(String),
    /// The SFTP session broke: reconnect, then retry.
    Reconnect(String),
}

use state::{FileStat, PinnedSchema, SourceState, StateFile};

/// Everything a file worker needs, shared.
struct Shared {
    config: SourceConfig,
    brokers: String,
    /// Replaced when it reports a fatal error (an idempotent producer can, e.g.
    /// after a broker lost its state): a fatal producer never sends again.
    producer: std::sync::Mutex<FutureProducer>,
    status: Arc<Status>,
    /// Processed files and the pinned schema, saved to `state_file` on change.
    state: tokio::sync::Mutex<SourceState>,
    state_file: StateFile,
}

pub(crate) async fn run(config: SourceConfig, ctx: TaskContext) {
    let TaskContext {
        name,
        brokers,
        status,
        shutdown,
        data_dir,
        client,
        ..
    } = ctx;
    let span = tracing::info_span!("source", connector = %name);
    async move {
        status.set_state(State::Unassigned);
        let state_file = StateFile::new(&data_dir, &name);
        let state = match state_file.load() {
            Ok(s) => s,
            Err(e) => {
                status.halt(e);
                return;
            }
        };
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
        let Some(sftp) = connect_sftp(&config, &status, &shutdown).await else {
            return;
        };
        status.set_state(State::Running);
        tracing::info!(topic = %config.topic, input = %config.input_path, server = %config.sftp.server(), "source running");
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
            state_file,
        });
        main_loop(shared, sftp, rx, watching, shutdown.clone()).await;
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let led = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map(|m| {
                    m.topics().iter().all(|t| {
                        t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                });
            match led {
                Ok(true) => return Ok(()),
                Ok(false) if std::time::Instant::now() < deadline => {
                    #[expect(clippy::disallowed_methods, reason = "runs inside spawn_blocking")]
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(false) => return Err("partitions without a leader".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
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

async fn connect_sftp(
    config: &SourceConfig,
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
            &config.input_path,
            &config.finished_path,
            &config.error_path,
        ] {
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
    shutdown: Shutdown,
) {
    let config = &shared.config;
    let mut interval = tokio::time::interval(config.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut jobs: JoinSet<(String, Outcome)> = JoinSet::new();
    // Which file each job holds, so a job that panics still releases its file.
    let mut job_files: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<Notice> = VecDeque::new();

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
                let sent = shared.state.lock().await.sent.clone();
                match scan(&sftp, config, min_age, &sent).await {
                    Ok(names) => {
                        for name in names {
                            enqueue(&mut queue, &in_flight, name, String::new());
                        }
                    }
                    Err(e) if e.is_connection() => reconnect = Some(e.to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the input directory");
                        shared.status.fail(e.to_string());
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
                        enqueue(&mut queue, &in_flight, n.name, n.traceparent);
                    }
                }
                WatchEvent::Rescan => interval.reset_immediately(),
            },
            Some(joined) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                let (name, outcome) = match joined {
                    Ok((id, done)) => {
                        job_files.remove(&id);
                        done
                    }
                    Err(e) => {
                        // A panicked job must not strand its file: release it, and
                        // the next poll takes it again.
                        let name = job_files.remove(&e.id()).unwrap_or_default();
                        tracing::error!(file = %name, error = %e, "file job failed; the file is left in place for the next poll");
                        (name.clone(), Outcome::Retry(format!("file {name}: job failed: {e}")))
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
                        if config.cleanup == Cleanup::None {
                            let mut state = shared.state.lock().await;
                            state.sent.insert(name, stat);
                            if let Err(e) = shared.state_file.save(&state) {
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
                    Outcome::Reconnect(e) => reconnect = Some(e),
                }
            }
        }
        if let Some(e) = reconnect {
            tracing::warn!(error = %e, "SFTP session lost; reconnecting");
            shared.status.waiting(e);
            match connect_sftp(config, &shared.status, &shutdown).await {
                Some(c) => {
                    sftp = c;
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
            let job = jobs.spawn(async move {
                let outcome = process_file(&shared, &sftp, &n.name, &n.traceparent).await;
                (n.name, outcome)
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
            tracing::warn!("files still in flight at shutdown are left in the input directory");
            jobs.abort_all();
        }
    }
}

/// Queues `name` unless it is queued or in flight already; a notice's trace
/// context is kept even when a poll queued the file first.
fn enqueue(queue: &mut VecDeque<Notice>, in_flight: &HashSet<String>, name: String, tp: String) {
    if in_flight.contains(&name) {
        return;
    }
    if let Some(q) = queue.iter_mut().find(|q| q.name == name) {
        if q.traceparent.is_empty() {
            q.traceparent = tp;
        }
        return;
    }
    queue.push_back(Notice {
        name,
        traceparent: tp,
    });
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

/// Reads, parses, produces and cleans up one file, inside a `source.file` span
/// that joins the file's trace. The trace context comes with the gateway's notice
/// or, for a file found by a scan or the poll, from the server itself: sftp-gateway
/// keeps each upload's traceparent beside the file and answers the
/// `traceparent@file-etl` SFTP extension. A server without it (OpenSSH) answers
/// "unsupported", and the file's trace starts here.
async fn process_file(shared: &Shared, sftp: &SftpClient, name: &str, tp: &str) -> Outcome {
    let span = tracing::info_span!("source.file", etl.file = %name, etl.rows = Empty);
    let looked_up;
    let tp = if tp.is_empty() {
        let path = join(&shared.config.input_path, name);
        looked_up = match sftp.traceparent(&path).await {
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
    process_file_inner(shared, sftp, name)
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

async fn process_file_inner(shared: &Shared, sftp: &SftpClient, name: &str) -> Outcome {
    let config = &shared.config;
    let path = join(&config.input_path, name);
    let started = std::time::Instant::now();
    let data = match sftp.read(&path).await {
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
        Err(e) => return reject(sftp, config, name, &skipped(e.to_string())).await,
    };
    drop(data);
    let rows = table.rows.len() as u64;
    if rows == 0 {
        let reason = format!(
            "line 1: the file has a header ({} columns) but no data row",
            table.header.len()
        );
        return reject(sftp, config, name, &skipped(reason)).await;
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
        return reject(sftp, config, name, &reason).await;
    }
    let fitted = match fit_schema(shared, name, &table).await {
        Ok(s) => s,
        Err(Fit::Reject(reason)) => return reject(sftp, config, name, &reason).await,
        Err(Fit::Retry(e)) => return Outcome::Retry(format!("file {name}: {e}")),
    };
    if let Err(e) = produce(shared, name, &table, &fitted).await {
        if let KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) = e {
            // Sending it again would fail again: the file cannot go through Kafka.
            let reason = format!(
                "a row is larger than the broker accepts for one record ({e}); split the file's long values or raise the topic's max.message.bytes"
            );
            return reject(sftp, config, name, &reason).await;
        }
        renew_if_fatal(shared);
        return Outcome::Retry(format!("file {name}: {e}"));
    }
    let stat = match sftp.stat(&path).await {
        Ok(s) => (s.size, s.modified_unix),
        Err(e) => return sftp_outcome(e),
    };
    let cleaned = match config.cleanup {
        Cleanup::Move => sftp.rename(&path, &join(&config.finished_path, name)).await,
        Cleanup::Delete => sftp.remove(&path).await,
        Cleanup::None => Ok(()),
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

/// Moves a file that does not parse to error/, with `<name>.error.txt` beside it.
async fn reject(sftp: &SftpClient, config: &SourceConfig, name: &str, reason: &str) -> Outcome {
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
    match sftp
        .rename(
            &join(&config.input_path, name),
            &join(&config.error_path, name),
        )
        .await
    {
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
    fn values(&self, row: &[String]) -> Vec<Value> {
        self.schema
            .fields
            .iter()
            .zip(&self.columns)
            .map(|(f, c)| match c.and_then(|c| row.get(c)) {
                None => Value::Null,
                Some(s) if s.is_empty() && self.empty_is_null => Value::Null,
                Some(s) if self.declared => {
                    parse_declared(s, f.ty).unwrap_or_else(|| Value::Text(s.clone()))
                }
                Some(s) => parse_value(s, f.ty).unwrap_or_else(|| Value::Text(s.clone())),
            })
            .collect()
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
    let Some(pinned) = state.schema.clone() else {
        state.schema = Some(PinnedSchema::of(name, &inferred));
        shared.state_file.save(&state).map_err(Fit::Retry)?;
        tracing::info!(file = %name, columns = inferred.fields.len(), "schema pinned by the first file");
        return Ok(fitted(inferred));
    };
    drop(state);
    let schema = pinned.schema(&config.schema_name).ok_or_else(|| {
        Fit::Retry(format!(
            "the pinned schema in {} names an unknown type; remove the file to pin a new one",
            shared.state_file.path().display()
        ))
    })?;
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
async fn produce(
    shared: &Shared,
    name: &str,
    table: &Table,
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
        { names::MESSAGING_BATCH_COUNT } = table.rows.len() as u64,
    );
    let traceparent = etl_telemetry::context::traceparent_of(&span).unwrap_or_default();
    async {
        let mut pending = FuturesUnordered::new();
        for (i, row) in table.rows.iter().enumerate() {
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
            let values = fitted.values(row);
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
