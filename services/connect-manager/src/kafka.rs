//! Kafka clients, configured once here: the idempotent producer of the
//! source, the manually committing consumer of the sink, topic creation, and
//! the metadata probe behind the health status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::{Client, ClientContext, DefaultClientContext},
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    producer::FutureProducer,
    statistics::Statistics,
    types::RDKafkaErrorCode,
};

use crate::config::Compression;

/// Partitions of a topic the sink has to create (the source's default too).
pub(crate) const DEFAULT_PARTITIONS: i32 = 3;

fn base(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.connection.setup.timeout.ms", "5000")
        // librdkafka logs every broker disconnect at error level; we retry anyway.
        .set("log.connection.close", "false");
    c
}

/// The worker's `--producer-compression-type`: set at start, read by every
/// producer made after. Process-wide because every producer of a worker
/// (source tasks, dead letters, cluster records) takes the worker's setting,
/// as in Kafka Connect.
static COMPRESSION: Mutex<Compression> = Mutex::new(Compression::None);

/// Sets the compression of the producers made from now on.
pub(crate) fn set_compression(compression: Compression) {
    *COMPRESSION.lock().unwrap_or_else(|e| e.into_inner()) = compression;
}

fn compression() -> Compression {
    *COMPRESSION.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every record of a file acknowledged by all replicas, exactly once per send.
pub(crate) fn producer(brokers: &str) -> KafkaResult<FutureProducer> {
    base(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", compression().as_str())
        // A file whose records cannot be delivered in this time is retried later.
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
}

/// The sink consumer's context: counts rebalances, so the sink's gap guard
/// (`sink::gaps`) can tell that what it learned about a partition's offsets may
/// no longer hold.
/// It also keeps each partition's high watermark as the fetch responses give
/// it (librdkafka's statistics, every [`STATISTICS_EVERY_MS`]), for the guard's
/// look at partitions that deliver nothing.
#[derive(Default)]
pub(crate) struct Rebalances {
    generation: std::sync::atomic::AtomicU64,
    high: Mutex<HashMap<(String, i32), i64>>,
}

/// How often librdkafka reports the sink consumer's statistics.
const STATISTICS_EVERY_MS: &str = "1000";

impl Rebalances {
    /// Bumped after every assignment and revocation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The partition's high watermark in the last statistics; `None` before a
    /// fetch response brought one. Not ListOffsets: tansu 0.6 answers that with
    /// its last producer batch's *base* offset + 1, far below the truth when
    /// batches hold many records.
    pub(crate) fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let high = self.high.lock().unwrap_or_else(|e| e.into_inner());
        high.get(&(topic.to_string(), partition)).copied()
    }
}

impl ClientContext for Rebalances {
    fn stats(&self, statistics: Statistics) {
        let mut high = self.high.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; -1001 unknown.
                if partition >= 0 && p.hi_offset >= 0 {
                    high.insert((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Rebalances {
    // Runs inside the consumer's poll, before the next message is returned, so
    // every message after a rebalance sees the new generation.
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A consumer in `group` that commits only what the sink wrote; with
/// `instance`, as that static member: a restart with the same instance id
/// takes the member's partitions back at once (no wait for the dead one's
/// session to expire).
pub(crate) fn consumer(
    brokers: &str,
    group: &str,
    instance: Option<&str>,
) -> KafkaResult<StreamConsumer<Rebalances>> {
    let mut config = base(brokers);
    if let Some(instance) = instance {
        config.set("group.instance.id", instance);
    }
    config
        .set("group.id", group)
        .set("statistics.interval.ms", STATISTICS_EVERY_MS)
        // A worker that died without a restart hands its partitions over after this.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka's default lets a fetch idle for 500 ms (see DESIGN facts).
        .set("fetch.wait.max.ms", "10")
        // librdkafka prefetches up to 64 MiB per consumer by default; 16 MiB
        // keeps a burst flowing (the sink writes far slower than it fetches)
        // and the service's peak RSS under 100 MB (`make bench`).
        .set("queued.max.messages.kbytes", "16384")
        .set("enable.partition.eof", "false")
        .create_with_context(Rebalances::default())
}

/// Creates `topic` unless it exists (tansu does not auto-create topics).
pub(crate) async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), String> {
    ensure_topic_with(brokers, topic, partitions, None).await
}

/// [`ensure_topic`] with a `cleanup.policy` (`compact` for the cluster's
/// config, status and offset topics, which keep the last record per key).
pub(crate) async fn ensure_topic_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    cleanup_policy: Option<&str>,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        base(brokers).create().map_err(|e| e.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if let Some(policy) = cleanup_policy {
        new = new.set("cleanup.policy", policy);
    }
    let results = admin
        .create_topics(&[new], &options)
        .await
        .map_err(|e| format!("cannot create topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(format!("cannot create topic {topic}: {code}")),
        }
    }
    // A broker lists a new topic in its metadata a moment after CreateTopics
    // answers. A consumer subscribing before then does not join its group at
    // all until its next metadata refresh (librdkafka: "no matching topics",
    // 5 minutes by default): a sink task, or a worker of a cluster, would sit
    // without partitions that long. So the topic is ready once it is listed.
    let name = topic.to_string();
    match tokio::task::spawn_blocking(move || wait_led(admin.inner(), &name, LISTED_WITHIN)).await {
        Ok(Err(e)) => Err(format!(
            "topic {topic} was created but is not served yet: {e}"
        )),
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

/// How long a topic just created may take to be listed with its leaders.
const LISTED_WITHIN: Duration = Duration::from_secs(10);

/// Blocking: waits up to `within` until `client`'s broker lists `topic` with a
/// leader for every partition.
pub(crate) fn wait_led<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    within: Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let led = client
            .fetch_metadata(Some(topic), Duration::from_secs(5))
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
                #[expect(
                    clippy::disallowed_methods,
                    reason = "blocking by contract: callers run it in spawn_blocking"
                )]
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(false) => return Err("not listed with a leader for every partition".to_string()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A member of `group` that never subscribes: reads committed offsets for [`watch_lag`].
pub(crate) fn lag_client(brokers: &str, group: &str) -> KafkaResult<BaseConsumer> {
    base(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
}

/// How often the lag behind a sink's group is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Keeps `status.lag` at the records the group has not committed yet (high
/// watermark minus committed offset, over every partition of `topics`), so the
/// health status can tell a stalled sink from an idle one. The high watermark
/// is the larger of ListOffsets' answer and what the sink's own fetches saw
/// (`fetched`): tansu answers ListOffsets with its last producer batch's base
/// offset + 1, which hid the records of a stalled batch.
pub(crate) async fn watch_lag(
    client: Option<BaseConsumer>,
    topics: Vec<String>,
    fetched: std::sync::Arc<Rebalances>,
    status: std::sync::Arc<crate::status::Status>,
    shutdown: etl_service::Shutdown,
) {
    let Some(client) = client else { return };
    let client = std::sync::Arc::new(client);
    loop {
        if !shutdown.sleep(LAG_EVERY).await {
            return;
        }
        let (c, t, f) = (client.clone(), topics.clone(), fetched.clone());
        match tokio::task::spawn_blocking(move || lag(&c, &t, &f)).await {
            Ok(Ok(lag)) => status.set_lag(lag),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot measure the sink's lag"),
            Err(_) => return,
        }
    }
}

/// Blocking: one metadata, one committed-offsets and per partition one watermark request.
fn lag(client: &BaseConsumer, topics: &[String], fetched: &Rebalances) -> KafkaResult<u64> {
    let timeout = Duration::from_secs(3);
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut high = std::collections::HashMap::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, listed) = client.fetch_watermarks(topic, p.id(), timeout)?;
                let hi = fetched
                    .high_watermark(topic, p.id())
                    .map_or(listed, |seen| seen.max(listed));
                high.insert((topic.clone(), p.id()), (low, hi));
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = client.committed_offsets(tpl, timeout)?;
    let mut total = 0u64;
    for e in committed.elements() {
        let Some(&(low, hi)) = high.get(&(e.topic().to_string(), e.partition())) else {
            continue;
        };
        let from = match e.offset() {
            rdkafka::Offset::Offset(o) => o.max(low),
            _ => low,
        };
        total += u64::try_from(hi - from).unwrap_or(0);
    }
    Ok(total)
}

/// A client for [`answers_metadata`], made once.
pub(crate) fn probe_client(brokers: &str) -> KafkaResult<BaseConsumer> {
    base(brokers).create()
}

/// One metadata round trip (blocking: call from a blocking thread).
pub(crate) fn answers_metadata(client: &BaseConsumer) -> Result<(), String> {
    client
        .fetch_metadata(None, Duration::from_secs(3))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A consumer for reading a compacted topic (the source's offsets) by
/// `assign` to a known end: it never joins a group nor commits, and reports
/// the end of each partition (`PartitionEOF`), so a reader can tell "read to
/// the end" even where compaction left the last offsets without records.
pub(crate) fn offset_reader(brokers: &str) -> KafkaResult<BaseConsumer> {
    base(brokers)
        // librdkafka's assign() fails without a group.id ("Local: Unknown
        // group"); with one it still never joins (no subscribe) nor commits.
        .set("group.id", "connect-manager-offset-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // librdkafka's default lets a fetch idle for 500 ms (see DESIGN facts).
        .set("fetch.wait.max.ms", "10")
        .create()
}
