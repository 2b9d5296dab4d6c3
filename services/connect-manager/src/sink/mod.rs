//! The sink connector: consumes the topics, and writes each batch of records
//! to Postgres in one transaction before committing the batch's offsets.
//!
//! Order of a batch: gather up to `batch.size` records (stopping once the
//! topic is quiet for a moment), decode them, de-duplicate by `(file, row)`,
//! write (see [`crate::postgres`]), commit the transaction, then commit the
//! Kafka offsets. A crash anywhere before the offset commit replays the batch,
//! which the `ON CONFLICT` write makes harmless. A record that cannot be
//! decoded is logged and skipped, so one bad record cannot wedge a partition.

pub(crate) mod config;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etl_core::{Schema, envelope};
use etl_service::{Backoff, Shutdown, retry};
use etl_telemetry::names;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{BorrowedMessage, Headers},
};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};
use tracing::{Instrument, Span};

pub(crate) use config::SinkConfig;

use crate::{
    connector::TaskContext,
    kafka,
    postgres::{self, SinkRow, TableCache, WriteError},
    status::{State, Status},
};

/// Gathering stops once no record arrived for this long.
const GATHER_IDLE: Duration = Duration::from_millis(50);

/// A decoded record and where it came from.
struct Incoming {
    topic: String,
    row: SinkRow,
    traceparent: String,
}

/// One gathered batch: rows per topic, and the offsets to commit after them.
#[derive(Default)]
struct Batch {
    rows: Vec<Incoming>,
    /// (topic, partition) → highest offset seen.
    offsets: BTreeMap<(String, i32), i64>,
    skipped: u64,
}

pub(crate) async fn run(config: SinkConfig, ctx: TaskContext) {
    let span = tracing::info_span!("sink", connector = %ctx.name);
    run_inner(config, ctx).instrument(span).await
}

async fn run_inner(config: SinkConfig, ctx: TaskContext) {
    let TaskContext {
        brokers,
        status,
        shutdown,
        ..
    } = ctx;
    status.set_state(State::Unassigned);
    let consumer = match kafka::consumer(&brokers, &config.group_id) {
        Ok(c) => c,
        Err(e) => {
            status.fail(format!("cannot create Kafka consumer for {brokers}: {e}"));
            return;
        }
    };
    // A subscription to a topic that does not exist yet is only noticed at the
    // next metadata refresh (minutes), and neither tansu nor a Kafka with
    // auto-create off creates it: make sure it exists, so start order never matters.
    for topic in &config.topics {
        let what = format!("Kafka topic {topic} at {brokers}");
        let created = retry(&what, &shutdown, || {
            kafka::ensure_topic(&brokers, topic, kafka::DEFAULT_PARTITIONS)
        })
        .await;
        if created.is_none() {
            return;
        }
    }
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        status.fail(format!("cannot subscribe to {topics:?}: {e}"));
        return;
    }
    let Some(client) = connect(&config, &status, &shutdown).await else {
        return;
    };
    status.set_state(State::Running);
    tracing::info!(topics = ?config.topics, target = %config.target, group = %config.group_id, "sink running");
    // Gathering and decoding the next batch overlaps the write of the previous
    // one; the channel holds one batch, so a slow database slows consumption.
    let consumer = Arc::new(consumer);
    let (tx, rx) = mpsc::channel::<Batch>(1);
    let writer = tokio::spawn(write_loop(
        config.clone(),
        status.clone(),
        shutdown.clone(),
        consumer.clone(),
        client,
        rx,
    ));
    let mut last_schema: Option<Arc<Schema>> = None;
    loop {
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = shutdown.wait() => break,
        };
        let mut batch = Batch::default();
        match first {
            Ok(m) => add(&mut batch, &m, &mut last_schema),
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                continue;
            }
        }
        while batch.rows.len() < config.batch_size {
            match tokio::time::timeout(GATHER_IDLE, consumer.recv()).await {
                Ok(Ok(m)) => add(&mut batch, &m, &mut last_schema),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        if batch.skipped > 0 {
            Status::add(&status.skipped, batch.skipped);
        }
        if tx.send(batch).await.is_err() {
            // The writer stopped: shutdown while Postgres was away.
            break;
        }
    }
    drop(tx);
    // Batches already handed over are written (or, if Postgres is away at
    // shutdown, replayed after a restart since their offsets stay uncommitted).
    let _ = writer.await;
}

/// Writes batches in order, committing each one's offsets after its rows.
async fn write_loop(
    config: SinkConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
    consumer: Arc<StreamConsumer>,
    client: Client,
    mut batches: mpsc::Receiver<Batch>,
) {
    let mut client = Some(client);
    let mut cache = TableCache::default();
    while let Some(batch) = batches.recv().await {
        if !write(
            &config,
            &status,
            &shutdown,
            &mut client,
            &mut cache,
            batch.rows,
        )
        .await
        {
            return;
        }
        commit(&consumer, &batch.offsets);
    }
}

async fn connect(config: &SinkConfig, status: &Status, shutdown: &Shutdown) -> Option<Client> {
    let what = format!("Postgres {}", config.target);
    retry(&what, shutdown, || async {
        let (client, connection) = config
            .target
            .pg_config()
            .connect(NoTls)
            .await
            .inspect_err(|e| status.waiting(format!("cannot connect to {what}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Postgres connection ended");
            }
        });
        Ok::<_, tokio_postgres::Error>(client)
    })
    .await
}

/// Decodes one record into the batch; a record that does not decode is
/// skipped (its offset still counts, so it is not read again).
fn add(batch: &mut Batch, m: &BorrowedMessage<'_>, last_schema: &mut Option<Arc<Schema>>) {
    let key = (m.topic().to_string(), m.partition());
    let offset = batch.offsets.entry(key).or_insert(m.offset());
    *offset = (*offset).max(m.offset());
    match decode(m, last_schema) {
        Ok(incoming) => batch.rows.push(incoming),
        Err(reason) => {
            batch.skipped += 1;
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "record skipped: cannot be decoded");
        }
    }
}

fn decode(
    m: &BorrowedMessage<'_>,
    last_schema: &mut Option<Arc<Schema>>,
) -> Result<Incoming, String> {
    let mut file = None;
    let mut row = None;
    let mut traceparent = String::new();
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            match h.key {
                names::HEADER_FILE => file = Some(v.to_string()),
                names::HEADER_ROW => row = v.parse::<i64>().ok(),
                names::HEADER_TRACEPARENT => traceparent = v.to_string(),
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
        file = Some(f.to_string());
        row = i64::try_from(r).ok();
    }
    let (Some(file), Some(row)) = (file, row) else {
        return Err("row number out of range".into());
    };
    let payload = m.payload().ok_or("record has no value")?;
    let (schema, values) = envelope::decode(payload).map_err(|e| e.to_string())?;
    let schema = match last_schema {
        Some(s) if **s == schema => s.clone(),
        _ => {
            let s = Arc::new(schema);
            *last_schema = Some(s.clone());
            s
        }
    };
    let trace_id = etl_telemetry::trace_id_of(&traceparent).map(str::to_string);
    Ok(Incoming {
        topic: m.topic().to_string(),
        row: SinkRow {
            file,
            row,
            trace_id,
            schema,
            values,
        },
        traceparent,
    })
}

/// Writes the batch, table by table, retrying with backoff until it is
/// committed. Returns false only when shutdown tripped first.
async fn write(
    config: &SinkConfig,
    status: &Status,
    shutdown: &Shutdown,
    client: &mut Option<Client>,
    cache: &mut TableCache,
    rows: Vec<Incoming>,
) -> bool {
    let mut by_table: BTreeMap<String, Vec<Incoming>> = BTreeMap::new();
    for r in rows {
        by_table
            .entry(config.table_for(&r.topic))
            .or_default()
            .push(r);
    }
    for (table, incoming) in by_table {
        let topic = incoming
            .first()
            .map(|i| i.topic.clone())
            .unwrap_or_default();
        let spans = file_spans(&topic, &table, &incoming);
        let rows = postgres::dedup_last(incoming.into_iter().map(|i| i.row).collect());
        let mut backoff = Backoff::default();
        loop {
            if client.as_ref().is_none_or(Client::is_closed) {
                *client = None;
                match connect(config, status, shutdown).await {
                    Some(c) => *client = Some(c),
                    None => return false,
                }
            }
            let Some(c) = client.as_mut() else {
                return false;
            };
            let started = std::time::Instant::now();
            let result = postgres::write_batch(
                c,
                cache,
                &table,
                &rows,
                config.insert_mode,
                config.auto_create,
                config.auto_evolve,
            )
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
                        let n = rows.iter().filter(|r| &r.file == file).count() as u64;
                        db.record(names::DB_ROWS, n);
                    }
                    Status::add(&status.records, written.staged);
                    status.set_state(State::Running);
                    tracing::debug!(%table, rows = written.staged, changed = written.changed, elapsed_ms = started.elapsed().as_millis() as u64, "batch written");
                    break;
                }
                Err(e) => {
                    cache.clear();
                    if e.is_closed() {
                        *client = None;
                    }
                    let message = describe(&e, &table, config);
                    tracing::warn!(error = %message, "batch not written; retrying");
                    status.fail(message);
                    if !shutdown.sleep(backoff.next_delay()).await {
                        return false;
                    }
                }
            }
        }
    }
    true
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
        match firsts.iter_mut().find(|(f, _, _)| *f == i.row.file) {
            Some(entry) => entry.2 += 1,
            None => firsts.push((&i.row.file, &i.traceparent, 1)),
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

/// Commits `offset + 1` per partition: the next record to read.
fn commit(consumer: &StreamConsumer, offsets: &BTreeMap<(String, i32), i64>) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1)) {
            tracing::warn!(%topic, partition, error = %e, "cannot prepare offset commit");
        }
    }
    if tpl.count() == 0 {
        return;
    }
    // A failed commit (say, during a rebalance) only means a replay, which
    // the sink's writes make harmless.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(error = %e, "offset commit failed; the batch may be replayed");
    }
}
