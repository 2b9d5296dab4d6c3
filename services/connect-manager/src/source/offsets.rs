//! Source offsets in Kafka's offset topic (distributed mode): the files a
//! source sent under `cleanup.policy=NONE` and its pinned schema, where every
//! worker sees them, in Kafka Connect's offset format (its tools read them):
//!
//! - key `["<connector>",{"file":"<name>"}]`, value `{"size":N,"mtime":M}`
//!   (`mtime` may be null); a tombstone forgets the file;
//! - key `["<connector>",{"schema":"pinned"}]`, value
//!   `{"from_file":…,"columns":[["name","type"],…]}`; a tombstone resets it.
//!
//! Reading: a consumer without a group, assigned to every partition from the
//! start (later reads: from where the last one stopped) up to the high
//! watermarks taken when the read starts; a file's last record wins. The
//! pinned schema is the exception: the *first* pin after the last tombstone
//! wins. Two workers may pin at once (each read "none yet" before the other
//! wrote), and all of them must send with one schema; the first record is the
//! one every reader agrees on. The worker whose pin lost writes the winner
//! again, so the key's last record (all that compaction keeps) is the winner
//! too.
//!
//! Writing: produce with the source's idempotent, acks=all producer and wait
//! for the acknowledgement. Records of one key go to one partition (the
//! producer's key hash), so their order is the order they were written in.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use serde_json::{Value as Json, json};

use super::state::{FileStat, PinnedSchema, SourceState};
use crate::{Error, kafka};

/// Kafka Connect's default `offset.storage.partitions`; used only when a
/// source writes before the cluster created the topic (it normally has).
const PARTITIONS: i32 = crate::cluster::OFFSET_PARTITIONS;
/// How long one read to the end may take before it is an error.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Metadata and watermark requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may wait in the producer's queue.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A change to a connector's offsets, as the offsets API makes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OffsetChange {
    /// The file was sent with this `(size, mtime)` (`Some`), or is forgotten
    /// (`None`: the next scan sends it again).
    File {
        name: String,
        stat: Option<FileStat>,
    },
    /// The pinned schema is set to this one (`Some`, replacing any), or reset
    /// (`None`: the next file pins a new one).
    Schema(Option<PinnedSchema>),
}

/// What a key of the offset topic names, for one connector.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    File(String),
    Schema,
}

/// `["<connector>",{"file":"<name>"}]`, as Kafka Connect's JsonConverter writes it.
pub(crate) fn file_key(connector: &str, file: &str) -> String {
    json!([connector, { "file": file }]).to_string()
}

/// `["<connector>",{"schema":"pinned"}]`.
pub(crate) fn schema_key(connector: &str) -> String {
    json!([connector, { "schema": "pinned" }]).to_string()
}

/// The key's meaning when it belongs to `connector`; None for other
/// connectors' keys and keys of shapes this source does not write.
fn decode_key(connector: &str, key: &[u8]) -> Option<Key> {
    let json: Json = serde_json::from_slice(key).ok()?;
    let [name, partition] = json.as_array()?.as_slice() else {
        return None;
    };
    if name.as_str()? != connector {
        return None;
    }
    let partition = partition.as_object()?;
    if partition.len() != 1 {
        return None;
    }
    if let Some(file) = partition.get("file") {
        return file
            .as_str()
            .filter(|f| !f.is_empty())
            .map(|f| Key::File(f.to_string()));
    }
    (partition.get("schema")?.as_str()? == "pinned").then_some(Key::Schema)
}

fn file_value((size, mtime): FileStat) -> Vec<u8> {
    json!({ "size": size, "mtime": mtime })
        .to_string()
        .into_bytes()
}

/// A whole number, written as a JSON number or as text (Kafka Connect's REST
/// API accepts both, so a record written by its tools may hold either).
fn whole(v: &Json) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn decode_file_value(value: &[u8]) -> Result<FileStat, String> {
    let json: Json = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let size = json
        .get("size")
        .and_then(whole)
        .ok_or_else(|| "no whole number \"size\"".to_string())?;
    let mtime = match json.get("mtime") {
        None | Some(Json::Null) => None,
        Some(m) => Some(whole(m).ok_or_else(|| "\"mtime\" is not a whole number".to_string())?),
    };
    Ok((size, mtime))
}

/// One connector's offsets as read so far.
#[derive(Debug, Default)]
struct View {
    state: SourceState,
    /// The pinned schema's last record (since the last tombstone): differs
    /// from `state.schema`, the first, while a lost pin was not overwritten.
    latest_schema: Option<PinnedSchema>,
}

impl View {
    fn apply(&mut self, key: Key, value: Option<&[u8]>) -> Result<(), String> {
        match (key, value) {
            (Key::File(name), None) => {
                self.state.sent.remove(&name);
            }
            (Key::File(name), Some(v)) => {
                let stat = decode_file_value(v)?;
                self.state.sent.insert(name, stat);
            }
            (Key::Schema, None) => {
                self.state.schema = None;
                self.latest_schema = None;
            }
            (Key::Schema, Some(v)) => {
                let pinned: PinnedSchema =
                    serde_json::from_slice(v).map_err(|e| format!("not a pinned schema: {e}"))?;
                if self.state.schema.is_none() {
                    self.state.schema = Some(pinned.clone());
                }
                self.latest_schema = Some(pinned);
            }
        }
        Ok(())
    }

    /// The winning pin when the key's last record is another one.
    fn to_repair(&self) -> Option<PinnedSchema> {
        let winner = self.state.schema.as_ref()?;
        (self.latest_schema.as_ref() != Some(winner)).then(|| winner.clone())
    }
}

/// The reading side: a group-less consumer, where each partition was read
/// to, and what was read.
struct Tail {
    consumer: BaseConsumer,
    next: HashMap<i32, i64>,
    view: View,
}

impl Tail {
    fn new(brokers: &str) -> Result<Self, String> {
        Ok(Self {
            consumer: kafka::offset_reader(brokers).map_err(|e| e.to_string())?,
            next: HashMap::new(),
            view: View::default(),
        })
    }

    /// Blocking: the partitions with records past what was read, each with
    /// its high watermark now, and the assignment that reads them from there.
    fn ends(&self, topic: &str) -> Result<(HashMap<i32, i64>, TopicPartitionList), String> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("cannot read the topic's metadata: {e}"))?;
        let mut pending = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        let Some(t) = metadata.topics().first() else {
            return Ok((pending, tpl));
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok((pending, tpl)),
            Some(code) => return Err(format!("the topic's metadata says {code}")),
        }
        for p in t.partitions() {
            let id = p.id();
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, id, REQUEST_TIMEOUT)
                .map_err(|e| format!("cannot read the end of partition {id}: {e}"))?;
            let from = self.next.get(&id).copied().unwrap_or(low).max(low);
            if high > from {
                pending.insert(id, high);
                tpl.add_partition_offset(topic, id, Offset::Offset(from))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok((pending, tpl))
    }

    /// Blocking: applies every record up to the high watermarks the
    /// partitions have now. A topic that does not exist holds nothing yet.
    fn catch_up(&mut self, topic: &str, connector: &str) -> Result<(), String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        // A topic created a moment ago may not have a leader for every
        // partition yet: its ends are asked again until the deadline.
        let (mut pending, tpl) = loop {
            match self.ends(topic) {
                Ok(ends) => break ends,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(%topic, error = %e, "offset topic not readable yet; asking again");
                    #[expect(clippy::disallowed_methods, reason = "runs on a blocking thread")]
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        if pending.is_empty() {
            return Ok(());
        }
        // A new assignment also drops whatever an earlier read left queued
        // (librdkafka versions each partition's fetches), so an end-of-partition
        // event seen from here on is from a fetch that began after the
        // watermarks above were taken.
        self.consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut last_error = String::new();
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                let mut behind: Vec<i32> = pending.keys().copied().collect();
                behind.sort_unstable();
                return Err(format!(
                    "not read to its end within {}s (partitions {behind:?}){}",
                    READ_TIMEOUT.as_secs(),
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!("; last error: {last_error}")
                    }
                ));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let (p, offset) = (m.partition(), m.offset());
                    if self.next.get(&p).is_some_and(|next| offset < *next) {
                        continue;
                    }
                    self.next.insert(p, offset + 1);
                    if let Some(key) = m.key().and_then(|k| decode_key(connector, k))
                        && let Err(e) = self.view.apply(key, m.payload())
                    {
                        // Another writer's mistake must not stop every worker's
                        // source: the record is skipped (a file it named is sent
                        // again, which the sink's upsert makes harmless).
                        tracing::warn!(%topic, partition = p, offset, key = %String::from_utf8_lossy(m.key().unwrap_or_default()), error = %e, "offset record skipped");
                    }
                    if pending.get(&p).is_some_and(|high| offset + 1 >= *high) {
                        pending.remove(&p);
                    }
                }
                // The end of a partition whose last offsets hold no record
                // (compacted away, or transaction markers).
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                }
                Some(Err(e)) => last_error = e.to_string(),
            }
        }
        Ok(())
    }
}

/// One connector's offsets in the offset topic: read incrementally, written
/// record by record.
pub(crate) struct TopicStore {
    brokers: String,
    topic: String,
    connector: String,
    /// Made at the first read; a read runs on a blocking thread holding it.
    tail: Arc<Mutex<Option<Tail>>>,
    /// Made at the first write, once the topic is known to exist.
    producer: tokio::sync::OnceCell<FutureProducer>,
}

impl TopicStore {
    pub(crate) fn new(brokers: &str, topic: &str, connector: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            connector: connector.to_string(),
            tail: Arc::new(Mutex::new(None)),
            producer: tokio::sync::OnceCell::new(),
        }
    }

    /// Where the offsets live, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("offset topic {} at {}", self.topic, self.brokers)
    }

    /// The key of the connector's pinned schema, for messages.
    pub(crate) fn schema_key(&self) -> String {
        schema_key(&self.connector)
    }

    /// The connector's offsets as the topic holds them now. The first call
    /// reads the whole topic; later ones only what was written since.
    pub(crate) async fn read(&self) -> Result<SourceState, String> {
        self.read_view().await.map(|(state, _)| state)
    }

    /// The state, and the winning pin when it must be written again.
    async fn read_view(&self) -> Result<(SourceState, Option<PinnedSchema>), String> {
        let (tail, topic, connector, brokers) = (
            self.tail.clone(),
            self.topic.clone(),
            self.connector.clone(),
            self.brokers.clone(),
        );
        let what = self.describe();
        tokio::task::spawn_blocking(move || {
            let mut guard = tail.lock().unwrap_or_else(PoisonError::into_inner);
            let tail = match &mut *guard {
                Some(t) => t,
                None => guard.insert(Tail::new(&brokers)?),
            };
            tail.catch_up(&topic, &connector)?;
            Ok((tail.view.state.clone(), tail.view.to_repair()))
        })
        .await
        .map_err(|e| format!("reading stopped: {e}"))
        .and_then(|r| r)
        .map_err(|e: String| {
            format!(
                "cannot read the source offsets of {connector} from {what}: {e}",
                connector = self.connector
            )
        })
    }

    /// Writes `changes` and waits until the broker has them all.
    pub(crate) async fn write(&self, changes: &[OffsetChange]) -> Result<(), String> {
        let schema_key = self.schema_key();
        let mut records = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                OffsetChange::File { name, stat } => {
                    records.push((file_key(&self.connector, name), stat.map(file_value)));
                }
                OffsetChange::Schema(None) => records.push((schema_key.clone(), None)),
                OffsetChange::Schema(Some(pinned)) => {
                    // The first pin after a tombstone wins: setting one is a
                    // reset followed by the new pin.
                    records.push((schema_key.clone(), None));
                    records.push((schema_key.clone(), Some(pinned_value(pinned)?)));
                }
            }
        }
        self.produce(records).await
    }

    /// Pins `mine` unless a schema is pinned already, and returns the pinned
    /// schema every worker agrees on: `mine`, or another worker's that was
    /// written first.
    pub(crate) async fn pin(&self, mine: &PinnedSchema) -> Result<PinnedSchema, String> {
        let key = self.schema_key();
        let (state, repair) = self.read_view().await?;
        if let Some(winner) = state.schema {
            self.repair(&key, repair).await?;
            return Ok(winner);
        }
        self.produce(vec![(key.clone(), Some(pinned_value(mine)?))])
            .await?;
        let (state, repair) = self.read_view().await?;
        let winner = state.schema.ok_or_else(|| {
            format!(
                "the pinned schema ({key} in {}) was reset while this file pinned it; the file is tried again",
                self.describe()
            )
        })?;
        self.repair(&key, repair).await?;
        Ok(winner)
    }

    /// Writes the winning pin again when the key's last record is a lost one.
    async fn repair(&self, key: &str, winner: Option<PinnedSchema>) -> Result<(), String> {
        let Some(winner) = winner else {
            return Ok(());
        };
        tracing::info!(topic = %self.topic, pinned_by = %winner.from_file, "another pin came after the winning one; writing the winner again");
        self.produce(vec![(key.to_string(), Some(pinned_value(&winner)?))])
            .await
    }

    /// Forgets every file the connector sent and, with `schema`, its pinned
    /// schema: a tombstone for each of those keys. Returns how many were written.
    pub(crate) async fn reset(&self, schema: bool) -> Result<usize, String> {
        let state = self.read().await?;
        let mut changes: Vec<OffsetChange> = state
            .sent
            .into_keys()
            .map(|name| OffsetChange::File { name, stat: None })
            .collect();
        if schema {
            changes.push(OffsetChange::Schema(None));
        }
        self.write(&changes).await?;
        Ok(changes.len())
    }

    async fn produce(&self, records: Vec<(String, Option<Vec<u8>>)>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "cannot write the source offsets of {} to {}: {e}",
                self.connector,
                self.describe()
            )
        };
        let producer = self
            .producer
            .get_or_try_init(|| async {
                // Compacted like Kafka Connect's: without it (a broker that
                // auto-creates topics would make a plain one) old offsets would
                // expire with the retention time.
                kafka::ensure_topic_with(&self.brokers, &self.topic, PARTITIONS, Some("compact"))
                    .await?;
                kafka::producer(&self.brokers).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| fail(&e))?;
        let sends = records.iter().map(|(key, value)| {
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(key.as_str());
            if let Some(v) = value {
                record = record.payload(v.as_slice());
            }
            producer.send(record, WRITE_TIMEOUT)
        });
        for delivered in futures::future::join_all(sends).await {
            delivered.map_err(|(e, _)| fail(&e))?;
        }
        Ok(())
    }
}

fn pinned_value(pinned: &PinnedSchema) -> Result<Vec<u8>, String> {
    serde_json::to_vec(pinned).map_err(|e| format!("cannot encode the pinned schema: {e}"))
}

fn kafka_error(brokers: &str, message: String) -> Error {
    Error::Kafka {
        brokers: brokers.to_string(),
        message,
    }
}

/// For the registry's offsets API in distributed mode: `connector`'s source
/// offsets (files sent, pinned schema) as `topic` holds them now.
pub(crate) async fn load_source_offsets(
    brokers: &str,
    topic: &str,
    connector: &str,
) -> Result<SourceState, Error> {
    TopicStore::new(brokers, topic, connector)
        .read()
        .await
        .map_err(|e| kafka_error(brokers, e))
}

/// For the registry's offsets API in distributed mode: writes `changes` to
/// `connector`'s offsets in `topic` and waits until the broker has them.
pub(crate) async fn write_source_offsets(
    brokers: &str,
    topic: &str,
    connector: &str,
    changes: &[OffsetChange],
) -> Result<(), Error> {
    TopicStore::new(brokers, topic, connector)
        .write(changes)
        .await
        .map_err(|e| kafka_error(brokers, e))
}

/// For the registry in distributed mode: a tombstone for every file
/// `connector` sent and, with `schema`, for its pinned schema (`DELETE
/// /connectors/{name}/offsets` keeps the schema, as in standalone mode; a
/// deleted connector forgets everything). Returns the tombstones written.
pub(crate) async fn reset_source_offsets(
    brokers: &str,
    topic: &str,
    connector: &str,
    schema: bool,
) -> Result<usize, Error> {
    TopicStore::new(brokers, topic, connector)
        .reset(schema)
        .await
        .map_err(|e| kafka_error(brokers, e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::{
        ClientConfig,
        admin::{AdminClient, AdminOptions, ResourceSpecifier},
        client::DefaultClientContext,
    };

    use super::*;

    fn pinned(from: &str, cols: &[(&str, &str)]) -> PinnedSchema {
        PinnedSchema {
            from_file: from.into(),
            columns: cols
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        }
    }

    #[test]
    fn keys_are_kafka_connects_json_and_only_ours_are_read() {
        assert_eq!(file_key("src", "a.csv"), r#"["src",{"file":"a.csv"}]"#);
        assert_eq!(schema_key("src"), r#"["src",{"schema":"pinned"}]"#);
        assert_eq!(
            decode_key("src", file_key("src", "a \"b\".csv").as_bytes()),
            Some(Key::File("a \"b\".csv".into()))
        );
        assert_eq!(
            decode_key("src", schema_key("src").as_bytes()),
            Some(Key::Schema)
        );
        for other in [
            file_key("other", "a.csv"),
            r#"["src",{"file":""}]"#.into(),
            r#"["src",{"file":"a","x":1}]"#.into(),
            r#"["src",{"schema":"v2"}]"#.into(),
            r#"["src"]"#.into(),
            r#"{"src":1}"#.into(),
            "not json".into(),
        ] {
            assert_eq!(decode_key("src", other.as_bytes()), None, "{other}");
        }
        assert_eq!(
            serde_json::from_slice::<Json>(&file_value((10, None))).expect("json"),
            json!({"size": 10, "mtime": null})
        );
        assert_eq!(
            decode_file_value(br#"{"size":"7","mtime":3}"#),
            Ok((7, Some(3)))
        );
        assert_eq!(decode_file_value(br#"{"size":7}"#), Ok((7, None)));
        assert!(decode_file_value(br#"{"mtime":3}"#).is_err());
        assert!(decode_file_value(br#"{"size":1,"mtime":"x"}"#).is_err());
    }

    #[test]
    fn files_keep_their_last_record_and_the_schema_its_first_since_a_tombstone() {
        let (p1, p2, p3) = (
            pinned("1.csv", &[("a", "int64")]),
            pinned("2.csv", &[("b", "string")]),
            pinned("3.csv", &[("c", "double")]),
        );
        let value = |p: &PinnedSchema| pinned_value(p).expect("encode");
        let mut view = View::default();
        let file = |n: &str| Key::File(n.into());
        view.apply(file("a"), Some(&file_value((1, Some(1)))))
            .expect("apply");
        view.apply(file("a"), Some(&file_value((2, Some(2)))))
            .expect("apply");
        view.apply(file("b"), Some(&file_value((3, None))))
            .expect("apply");
        view.apply(file("b"), None).expect("apply");
        assert!(view.apply(file("c"), Some(b"{}")).is_err());
        assert_eq!(
            view.state.sent.clone().into_iter().collect::<Vec<_>>(),
            vec![("a".to_string(), (2, Some(2)))]
        );

        view.apply(Key::Schema, Some(&value(&p1))).expect("apply");
        view.apply(Key::Schema, Some(&value(&p2))).expect("apply");
        assert_eq!(view.state.schema, Some(p1.clone()), "the first pin wins");
        assert_eq!(
            view.to_repair(),
            Some(p1.clone()),
            "the lost pin is the last record"
        );
        view.apply(Key::Schema, Some(&value(&p1))).expect("apply");
        assert_eq!(view.to_repair(), None, "written again by the loser");
        view.apply(Key::Schema, None).expect("apply");
        assert_eq!(view.state.schema, None, "a tombstone resets it");
        view.apply(Key::Schema, Some(&value(&p3))).expect("apply");
        assert_eq!(view.state.schema, Some(p3));
        assert!(view.apply(Key::Schema, Some(b"[1]")).is_err());
    }

    fn brokers() -> String {
        testkit::shared_broker()
            .expect("the shared Kafka broker starts")
            .bootstrap()
    }

    /// The offset topic's `cleanup.policy`, as the broker reports it.
    async fn cleanup_policy(brokers: &str, topic: &str) -> Option<String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
        let described = admin
            .describe_configs(
                &[ResourceSpecifier::Topic(topic)],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("describe configs");
        let resource = described.into_iter().next()?.ok()?;
        resource.get("cleanup.policy")?.value.clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_offset_topic_round_trips_sent_files_and_the_pinned_schema() {
        let brokers = tokio::task::spawn_blocking(brokers).await.expect("join");
        let topic = testkit::unique_name("connect-offsets");
        let store = TopicStore::new(&brokers, &topic, "src");
        assert_eq!(
            store.read().await.expect("a missing topic reads as empty"),
            SourceState::default()
        );

        store
            .write(&[
                OffsetChange::File {
                    name: "a.csv".into(),
                    stat: Some((10, Some(5))),
                },
                OffsetChange::File {
                    name: "b.csv".into(),
                    stat: Some((20, None)),
                },
            ])
            .await
            .expect("write creates the topic");
        assert_eq!(
            cleanup_policy(&brokers, &topic).await.as_deref(),
            Some("compact")
        );
        let p1 = pinned("a.csv", &[("body", "string"), ("n", "int64")]);
        assert_eq!(store.pin(&p1).await.expect("pin"), p1);
        // Another connector's offsets in the same topic are not ours.
        write_source_offsets(
            &brokers,
            &topic,
            "other",
            &[OffsetChange::File {
                name: "a.csv".into(),
                stat: Some((1, None)),
            }],
        )
        .await
        .expect("write");

        let fresh = load_source_offsets(&brokers, &topic, "src")
            .await
            .expect("load");
        assert_eq!(fresh.sent.len(), 2, "{fresh:?}");
        assert_eq!(fresh.sent.get("a.csv"), Some(&(10, Some(5))));
        assert_eq!(fresh.sent.get("b.csv"), Some(&(20, None)));
        assert_eq!(fresh.schema, Some(p1.clone()));

        // A second pin (another worker's) gets the first one back.
        let p2 = pinned("c.csv", &[("other", "string")]);
        let worker2 = TopicStore::new(&brokers, &topic, "src");
        assert_eq!(worker2.pin(&p2).await.expect("pin"), p1);

        // A tombstone forgets a file, also for a reader that read before.
        store
            .write(&[OffsetChange::File {
                name: "b.csv".into(),
                stat: None,
            }])
            .await
            .expect("tombstone");
        let again = worker2.read().await.expect("read what is new");
        assert_eq!(again.sent.keys().collect::<Vec<_>>(), vec!["a.csv"]);

        // Reset without the schema, then with it.
        assert_eq!(
            reset_source_offsets(&brokers, &topic, "src", false)
                .await
                .expect("reset"),
            1
        );
        let reset = worker2.read().await.expect("read");
        assert!(reset.sent.is_empty());
        assert_eq!(reset.schema, Some(p1.clone()), "the schema stays");
        reset_source_offsets(&brokers, &topic, "src", true)
            .await
            .expect("reset");
        assert_eq!(worker2.read().await.expect("read"), SourceState::default());
        let other = load_source_offsets(&brokers, &topic, "other")
            .await
            .expect("load");
        assert_eq!(other.sent.get("a.csv"), Some(&(1, None)), "untouched");

        // Setting a schema replaces the pinned one.
        let p3 = pinned("set.csv", &[("x", "double")]);
        store
            .write(&[OffsetChange::Schema(Some(p1.clone()))])
            .await
            .expect("set");
        store
            .write(&[OffsetChange::Schema(Some(p3.clone()))])
            .await
            .expect("set");
        assert_eq!(worker2.read().await.expect("read").schema, Some(p3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_pinning_at_once_agree_on_one_schema() {
        let brokers = tokio::task::spawn_blocking(brokers).await.expect("join");
        let topic = testkit::unique_name("connect-offsets");
        for round in 0..5 {
            let connector = format!("src{round}");
            let stores: Vec<TopicStore> = (0..3)
                .map(|_| TopicStore::new(&brokers, &topic, &connector))
                .collect();
            let pins: Vec<PinnedSchema> = (0..3)
                .map(|i| pinned(&format!("{i}.csv"), &[(&format!("col{i}"), "string")]))
                .collect();
            let (a, b, c) = tokio::join!(
                stores[0].pin(&pins[0]),
                stores[1].pin(&pins[1]),
                stores[2].pin(&pins[2])
            );
            let won = [a.expect("pin"), b.expect("pin"), c.expect("pin")];
            assert!(won.iter().all(|w| *w == won[0]), "round {round}: {won:?}");
            let reader = TopicStore::new(&brokers, &topic, &connector);
            let (state, repair) = reader.read_view().await.expect("read");
            assert_eq!(state.schema.as_ref(), Some(&won[0]));
            assert_eq!(
                repair, None,
                "round {round}: the last record is the winner too"
            );
        }

        // A pin that lost and was never written over (its worker died): the
        // next pin repairs it, so compaction keeps the winner.
        let store = TopicStore::new(&brokers, &topic, "crashed");
        let (first, lost) = (
            pinned("first.csv", &[("a", "string")]),
            pinned("lost.csv", &[("b", "string")]),
        );
        let key = store.schema_key();
        for p in [&first, &lost] {
            store
                .produce(vec![(key.clone(), Some(pinned_value(p).expect("encode")))])
                .await
                .expect("write");
        }
        let (state, repair) = TopicStore::new(&brokers, &topic, "crashed")
            .read_view()
            .await
            .expect("read");
        assert_eq!(
            (state.schema, repair),
            (Some(first.clone()), Some(first.clone()))
        );
        let next = pinned("next.csv", &[("c", "string")]);
        assert_eq!(store.pin(&next).await.expect("pin"), first);
        let (_, repair) = TopicStore::new(&brokers, &topic, "crashed")
            .read_view()
            .await
            .expect("read");
        assert_eq!(repair, None);
    }
}
