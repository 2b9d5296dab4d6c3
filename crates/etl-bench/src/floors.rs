//! Floors: what the same work costs without the pipeline, measured on the same
//! stack right after the burst, so broker, storage, Postgres and machine are
//! the ones the burst had.
//!
//! - **produce** and **consume**: the burst's own records are read back from
//!   its topic ([`capture`], untimed), then produced again — same partition,
//!   key, value and headers, so the same bytes — into a fresh topic with the
//!   source connector's producer settings (idempotent, `acks=all`,
//!   `linger.ms=5`), and consumed back from it with the sink's fetch settings
//!   (`fetch.wait.max.ms=10`). Timed from the first send to the last
//!   acknowledgement, and from the assignment to the last record.
//! - **COPY**: the burst's rows are read out of the sink's table in binary and
//!   written with one binary `COPY` into a fresh table made `LIKE` it
//!   (`INCLUDING ALL`: same columns, defaults and primary key index). Timed
//!   from `COPY … FROM STDIN` to its completion (it commits on its own).
//! - **extractor alone**: `extractor run --output-dir` on the burst's input,
//!   with the chunk size of the burst: read, transform and chunk, written to a
//!   local directory, no upload, no verifier.
//!
//! Connections are made before the clock starts: the pipeline's are warm too.

use std::path::Path;
use std::pin::pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use etl_pg::quote_ident;

use crate::error::{Error, Result};

/// The floors of one stack, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Floors {
    /// Records produced and consumed (the burst's topic, read back).
    pub records: u64,
    /// Their bytes: keys, values and headers.
    pub record_bytes: u64,
    /// Rows copied (the burst's rows in the sink's table).
    pub rows: u64,
    pub produce_ms: u64,
    pub consume_ms: u64,
    pub copy_ms: u64,
    /// produce + consume + COPY: what the burst is compared with.
    pub sum_ms: u64,
    /// The extractor alone on the burst's input (not in the sum).
    pub extractor_ms: u64,
    /// Each floor is the fastest of this many runs ([`REPETITIONS`]).
    pub repetitions: u32,
    /// Every run, in order. The fastest is the floor; the others show how
    /// much the stack varied meanwhile (one run's produce floor was 2.6 times
    /// the usual in all three of its runs, and only this makes that visible).
    pub runs: Vec<FloorRun>,
}

/// One run of the floors, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FloorRun {
    pub produce_ms: u64,
    pub consume_ms: u64,
    pub copy_ms: u64,
    pub extractor_ms: u64,
}

/// Runs of each floor; the fastest counts. A floor is what the machine
/// allows, and a single run varied up to 1.5x from one bench to the next
/// (another process's moment on the two cores, the page cache): the best of a
/// few is the stable estimate of it, and it only makes the ratios stricter.
pub const REPETITIONS: u32 = 3;

/// One Kafka record as it sits in the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The producer's CreateTime, Unix ms.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// Key, value and header bytes.
    pub fn size(&self) -> u64 {
        let opt = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + opt(v)).sum();
        (opt(&self.key) + opt(&self.value) + headers) as u64
    }

    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

fn base(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("log.connection.close", "false");
    c
}

/// The source connector's producer settings (connect-manager `kafka::producer`,
/// with its default `--producer-compression-type none`).
fn producer(bootstrap: &str) -> Result<FutureProducer> {
    base(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .map_err(Error::kafka(bootstrap))
}

/// A reader outside any group's offsets: it assigns partitions itself.
/// `fetch.wait.max.ms` is the sink's (connect-manager `kafka::consumer`).
///
/// Fetch limits are far above librdkafka's 1 MB per partition, so that a
/// response never ends inside a producer batch: tansu 0.6's memory engine
/// answers the next fetch, from an offset inside that batch, with the batches
/// whose base offset is at or after it, and the rest of the cut batch would be
/// skipped (README, "Guarantees"). A live consumer such as the sink rarely
/// meets this; a reader of a full topic meets it at every response.
fn reader(bootstrap: &str) -> Result<BaseConsumer> {
    base(bootstrap)
        .set("group.id", format!("etl-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("max.partition.fetch.bytes", (256 << 20).to_string())
        .set("fetch.max.bytes", (1 << 30).to_string())
        .set(
            "receive.message.max.bytes",
            ((1 << 30) + (1 << 20)).to_string(),
        )
        .set("enable.partition.eof", "false")
        .create()
        .map_err(Error::kafka(bootstrap))
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a topic back may take before it is an error.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Reading the burst's topic back ends after this long without a record.
const CAPTURE_QUIET: Duration = Duration::from_secs(3);

/// What a read of a whole topic saw.
struct Read {
    records: Vec<Record>,
    count: u64,
    bytes: u64,
    elapsed: Duration,
}

/// When a read of a topic is over.
#[derive(Clone, Copy, Debug)]
enum Until {
    /// This many records were read (the consume floor: it knows what it produced).
    Count(u64),
    /// No record came for this long (reading back what the burst left). The
    /// topic's high watermarks are not trusted for this: tansu's memory
    /// engine reports them short of the last batch.
    Quiet(Duration),
}

/// Reads `topic` from the beginning of every partition until `until`,
/// keeping the records when `keep`. Blocking: run it on a blocking thread. The
/// clock runs from the assignment to the last record.
fn read_topic(bootstrap: &str, topic: &str, until: Until, keep: bool) -> Result<Read> {
    let consumer = reader(bootstrap)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(Error::kafka(bootstrap))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(Error::kafka(bootstrap))?;
        }
    }
    if tpl.count() == 0 {
        return Err(Error::Kafka {
            bootstrap: bootstrap.to_owned(),
            reason: format!("topic {topic} has no partitions (does it exist?)"),
        });
    }
    // Partition → the next offset expected; a jump is records the broker
    // skipped (see `reader`).
    let mut next: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    let mut skipped = 0i64;
    let started = Instant::now();
    consumer.assign(&tpl).map_err(Error::kafka(bootstrap))?;
    let (mut records, mut count, mut bytes) = (Vec::new(), 0u64, 0u64);
    let mut last = started;
    loop {
        match until {
            Until::Count(n) if count >= n => break,
            Until::Quiet(quiet) if last.elapsed() >= quiet => break,
            _ => {}
        }
        if started.elapsed() > READ_TIMEOUT {
            return Err(Error::Timeout(format!(
                "reading topic {topic} from {bootstrap}: {count} records in {}s ({until:?})",
                READ_TIMEOUT.as_secs()
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let m = message.map_err(Error::kafka(bootstrap))?;
        last = Instant::now();
        count += 1;
        let expected = next.entry(m.partition()).or_insert(m.offset());
        skipped += (m.offset() - *expected).max(0);
        *expected = m.offset() + 1;
        let record = Record {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        };
        bytes += record.size();
        if keep {
            records.push(record);
        }
    }
    let elapsed = last.duration_since(started);
    if skipped > 0 {
        return Err(Error::Kafka {
            bootstrap: bootstrap.to_owned(),
            reason: format!(
                "reading topic {topic}: the broker skipped {skipped} records (offsets jumped; \
                 {count} read): a fetch from inside a producer batch lost its rest"
            ),
        });
    }
    Ok(Read {
        records,
        count,
        bytes,
        elapsed,
    })
}

/// Every record of `topic` (untimed: the material of the produce floor, and the
/// producers' timestamps of the burst).
pub async fn capture(bootstrap: &str, topic: &str) -> Result<Vec<Record>> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    let read =
        tokio::task::spawn_blocking(move || read_topic(&b, &t, Until::Quiet(CAPTURE_QUIET), true))
            .await
            .map_err(|e| Error::Unexpected {
                what: "the topic reader".to_owned(),
                reason: e.to_string(),
            })??;
    Ok(read.records)
}

/// Creates `topic` with `partitions` (replication 1, as the stack's topic).
async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        base(bootstrap).create().map_err(Error::kafka(bootstrap))?;
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .map_err(Error::kafka(bootstrap))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::Kafka {
                    bootstrap: bootstrap.to_owned(),
                    reason: format!("cannot create topic {topic}: {code}"),
                });
            }
        }
    }
    Ok(())
}

/// Produces `records` into the fresh topic `topic` (same partitions, keys,
/// values, headers) and returns the time from the first send to the last
/// acknowledgement.
pub async fn produce(bootstrap: &str, topic: &str, records: &[Record]) -> Result<Duration> {
    let partitions = records.iter().map(|r| r.partition).max().unwrap_or(0) + 1;
    create_topic(bootstrap, topic, partitions).await?;
    let producer = producer(bootstrap)?;
    // Connected, with its idempotent producer id, and every partition of the
    // new topic led, before the clock starts, as the source's producer is
    // when a burst begins (it sent the warm-up file): one record into a side
    // topic first. Without it, the first acknowledgement came after ~500 ms
    // in two of three runs on tansu (librdkafka waiting to ask for the id
    // again), whatever the records' count: a 9,277-record floor of 520 ms
    // against 31 ms.
    let warm = format!("{topic}-warm");
    create_topic(bootstrap, &warm, 1).await?;
    wait_led(&producer, bootstrap, &warm, 1).await?;
    let delivered = producer
        .send(
            FutureRecord::<(), [u8]>::to(&warm).payload(&[]),
            METADATA_TIMEOUT,
        )
        .await;
    if let Err((e, _)) = delivered {
        return Err(Error::kafka(bootstrap)(e));
    }
    wait_led(&producer, bootstrap, topic, partitions).await?;

    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut failed: Option<String> = None;
    for r in records {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (key, value) in &r.headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: value.as_ref(),
            });
        }
        let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(topic)
            .partition(r.partition)
            .headers(headers);
        if let Some(key) = &r.key {
            record = record.key(key);
        }
        if let Some(value) = &r.value {
            record = record.payload(value);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: let some acknowledgements in.
                    record = back;
                    if let Some(result) = pending.next().await {
                        note_delivery(result, &mut failed);
                    }
                }
                Err((e, _)) => return Err(Error::kafka(bootstrap)(e)),
            }
        }
    }
    while let Some(result) = pending.next().await {
        note_delivery(result, &mut failed);
    }
    let elapsed = started.elapsed();
    match failed {
        Some(reason) => Err(Error::Kafka {
            bootstrap: bootstrap.to_owned(),
            reason: format!("producing into {topic}: {reason}"),
        }),
        None => Ok(elapsed),
    }
}

/// Waits until the producer's metadata shows every one of `partitions`
/// partitions of `topic` with a leader: a topic just created may answer
/// metadata before its leaders are elected, and that wait is not producing.
async fn wait_led(
    producer: &FutureProducer,
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + METADATA_TIMEOUT;
    loop {
        let (p, t, b) = (producer.clone(), topic.to_owned(), bootstrap.to_owned());
        let led = tokio::task::spawn_blocking(move || {
            let metadata = p
                .client()
                .fetch_metadata(Some(&t), METADATA_TIMEOUT)
                .map_err(Error::kafka(&b))?;
            Ok::<_, Error>(metadata.topics().iter().filter(|x| x.name() == t).all(|x| {
                x.error().is_none()
                    && x.partitions().len() as i32 >= partitions
                    && x.partitions().iter().all(|p| p.leader() >= 0)
            }))
        })
        .await
        .map_err(|e| Error::Unexpected {
            what: "the producer's metadata request".to_owned(),
            reason: e.to_string(),
        })??;
        if led {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Kafka {
                bootstrap: bootstrap.to_owned(),
                reason: format!("topic {topic} has no leader for every partition"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn note_delivery(
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
    failed: &mut Option<String>,
) {
    let reason = match result {
        Ok(Ok(_)) => return,
        Ok(Err((e, _))) => e.to_string(),
        Err(_) => "delivery canceled".to_owned(),
    };
    failed.get_or_insert(reason);
}

/// Consumes the `records` records of `topic` and returns the time from the assignment to
/// the last record, with the records' count and bytes.
pub async fn consume(bootstrap: &str, topic: &str, records: u64) -> Result<(Duration, u64, u64)> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    let read =
        tokio::task::spawn_blocking(move || read_topic(&b, &t, Until::Count(records), false))
            .await
            .map_err(|e| Error::Unexpected {
                what: "the topic reader".to_owned(),
                reason: e.to_string(),
            })??;
    Ok((read.elapsed, read.count, read.bytes))
}

/// A column value as Postgres' binary format has it, whatever its type: read
/// from `COPY … TO STDOUT (FORMAT binary)` and written back unchanged, so the
/// floor spends no time converting.
#[derive(Debug)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl ToSql for Raw {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Copies the rows of run `run_id` in `table` into a fresh `floor_table` made
/// like it, with one binary COPY, and returns the COPY's time and the rows
/// copied. The floor table is dropped afterwards.
pub async fn copy(
    url: &str,
    table: &str,
    run_id: &str,
    floor_table: &str,
) -> Result<(Duration, u64)> {
    let pg = Error::postgres;
    let (client, connection) = crate::stack::connect_postgres(url, "copy floor").await?;
    let (src, dst) = (quote_ident(table), quote_ident(floor_table));
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {dst}; CREATE TABLE {dst} (LIKE {src} INCLUDING ALL)"
        ))
        .await
        .map_err(pg(url))?;
    let columns = client
        .prepare(&format!("SELECT * FROM {src} LIMIT 0"))
        .await
        .map_err(pg(url))?;
    let types: Vec<Type> = columns
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();

    // COPY takes no parameters: the pattern is a literal (quotes doubled;
    // backslashes are plain characters in standard-conforming strings).
    let pattern = crate::burst::run_files_pattern(run_id).replace('\'', "''");
    let out = client
        .copy_out(&format!(
            "COPY (SELECT * FROM {src} WHERE {} LIKE '{pattern}') TO STDOUT (FORMAT binary)",
            quote_ident(etl_pg::lineage::FILE)
        ))
        .await
        .map_err(pg(url))?;
    let mut out = pin!(BinaryCopyOutStream::new(out, &types));
    let mut rows: Vec<Vec<Raw>> = Vec::new();
    while let Some(row) = out.next().await {
        let row = row.map_err(pg(url))?;
        let values = (0..types.len())
            .map(|i| row.try_get::<Raw>(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg(url))?;
        rows.push(values);
    }

    let started = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {dst} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(pg(url))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for row in &rows {
        let values: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&values).await.map_err(pg(url))?;
    }
    let copied = writer.finish().await.map_err(pg(url))?;
    let elapsed = started.elapsed();

    client
        .batch_execute(&format!("DROP TABLE {dst}"))
        .await
        .map_err(pg(url))?;
    drop(client);
    let _ = connection.await;
    Ok((elapsed, copied))
}

/// Runs `extractor run --input INPUT --output-dir OUT --chunk-size N` and returns
/// its wall time. Its output goes to `log`.
pub async fn extractor_alone(
    extractor: &Path,
    input: &Path,
    chunk_size: u32,
    out_dir: &Path,
    log: &Path,
) -> Result<Duration> {
    std::fs::create_dir_all(out_dir).map_err(Error::io(out_dir))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io(log))?;
    let what = format!(
        "{} run --input {} --output-dir {} --chunk-size {chunk_size}",
        extractor.display(),
        input.display(),
        out_dir.display()
    );
    let started = Instant::now();
    let status = tokio::process::Command::new(extractor)
        .arg("run")
        .arg("--input")
        .arg(input)
        .arg("--output-dir")
        .arg(out_dir)
        .arg("--chunk-size")
        .arg(chunk_size.to_string())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(Error::io(log))?)
        .stderr(file)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|source| Error::Spawn {
            what: what.clone(),
            source,
        })?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(Error::Command {
            what,
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: etl_stack::logs::log_tail(log, 20),
        });
    }
    Ok(elapsed)
}

/// Milliseconds, rounded.
pub fn ms(d: Duration) -> u64 {
    (d.as_secs_f64() * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_size_counts_keys_values_and_headers() {
        let r = Record {
            partition: 0,
            key: Some(b"f:1".to_vec()),
            value: Some(vec![0; 100]),
            headers: vec![("etl.run".to_owned(), Some(b"run-1".to_vec()))],
            timestamp_ms: None,
        };
        assert_eq!(r.size(), 3 + 100 + 7 + 5);
        assert_eq!(r.header("etl.run"), Some("run-1"));
        assert_eq!(r.header("etl.file"), None);
    }

    #[test]
    fn raw_values_pass_through_unchanged() {
        let mut out = BytesMut::new();
        let value = Raw::from_sql(&Type::TEXT, b"abc").expect("from");
        assert!(matches!(
            value.to_sql(&Type::TEXT, &mut out),
            Ok(IsNull::No)
        ));
        assert_eq!(&out[..], b"abc");
        let null = Raw::from_sql_null(&Type::INT8).expect("null");
        assert!(matches!(
            null.to_sql(&Type::INT8, &mut out),
            Ok(IsNull::Yes)
        ));
        assert!(<Raw as ToSql>::accepts(&Type::TIMESTAMPTZ));
    }
}
