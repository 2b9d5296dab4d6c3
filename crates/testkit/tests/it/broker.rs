use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use testkit::{Broker, Storage, free_port, shared_tansu, test_log_dir, unique_name};

use crate::TestResult;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Produces records `rows` with key `file:row` and the etl headers, idempotently.
async fn produce(broker: &Broker, topic: &str, rows: std::ops::Range<u32>) -> TestResult {
    let producer: FutureProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let sends = rows.map(|row| {
        let key = format!("file.csv:{row}");
        let row_text = row.to_string();
        let payload = format!("{{\"row\":{row}}}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            })
            .insert(Header {
                key: "etl.row",
                value: Some(row_text.as_str()),
            });
        let producer = &producer;
        async move {
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            producer.send(record, TIMEOUT).await.map_err(|(e, _)| e)
        }
    });
    try_join_all(sends).await?;
    Ok(())
}

fn group_consumer(broker: &Broker, group: &str) -> Result<StreamConsumer, KafkaError> {
    broker
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .create()
}

/// Receives `count` records as (key, etl.row header, partition), commits, and returns them.
async fn consume(
    broker: &Broker,
    topic: &str,
    group: &str,
    count: usize,
) -> Result<Vec<(String, String, i32)>, Box<dyn std::error::Error>> {
    let consumer = group_consumer(broker, group)?;
    consumer.subscribe(&[topic])?;
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .map_err(|_| format!("only {} of {count} records within {TIMEOUT:?}", got.len()))??;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let headers = message.headers().ok_or("record without headers")?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert!(header("traceparent").is_some_and(|t| t.starts_with("00-")));
        let row = header("etl.row").ok_or("no etl.row header")?;
        got.push((key, row, message.partition()));
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    Ok(got)
}

/// Sum of the group's committed offsets on `topic`.
fn committed_total(broker: &Broker, topic: &str, group: &str) -> Result<i64, KafkaError> {
    let consumer = group_consumer(broker, group)?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..3 {
        assignment.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(assignment, TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|offset| *offset >= 0)
        .sum())
}

/// What the connectors rely on: a topic made through the admin API, records with headers,
/// a consumer group whose committed offsets the broker keeps.
#[tokio::test]
async fn admin_topic_headers_and_consumer_group_round_trip() -> TestResult {
    let broker = shared_tansu()?;
    let topic = broker.create_unique_topic("review_etl", 3).await?;
    produce(broker, &topic, 1..101).await?;

    let group = unique_name("sink");
    let got = consume(broker, &topic, &group, 100).await?;
    let keys: BTreeSet<&str> = got.iter().map(|(key, _, _)| key.as_str()).collect();
    assert_eq!(keys.len(), 100, "every record exactly once");
    for (key, row, _) in &got {
        assert_eq!(key, &format!("file.csv:{row}"));
    }
    let mut per_partition: HashMap<i32, usize> = HashMap::new();
    for (_, _, partition) in &got {
        *per_partition.entry(*partition).or_default() += 1;
    }
    assert_eq!(
        per_partition.len(),
        3,
        "keys spread over 3 partitions: {per_partition:?}"
    );

    assert_eq!(committed_total(broker, &topic, &group)?, 100);
    Ok(())
}

/// tansu does not auto-create topics: producing to, or asking metadata for, a missing
/// topic answers UNKNOWN_TOPIC_OR_PARTITION; the connectors must create theirs.
#[tokio::test]
async fn topics_are_not_auto_created_and_duplicates_are_refused() -> TestResult {
    let broker = shared_tansu()?;
    let missing = unique_name("missing");
    let producer: FutureProducer = broker
        .client_config()
        .set("topic.metadata.propagation.max.ms", "1000")
        .set("message.timeout.ms", "5000")
        .create()?;
    let sent = producer
        .send(FutureRecord::to(&missing).key("k").payload("v"), TIMEOUT)
        .await;
    match sent {
        Err((KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, RDKafkaErrorCode::UnknownTopicOrPartition);
        }
        other => panic!("producing to a missing topic: {other:?}"),
    }
    let consumer: BaseConsumer = broker
        .client_config()
        .set("allow.auto.create.topics", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&missing), TIMEOUT)?;
    let topic = metadata.topics().first().ok_or("no topic in metadata")?;
    assert_eq!(
        topic.error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );

    let topic = broker.create_unique_topic("dup", 3).await?;
    let again = broker.create_topic(&topic, 3).await;
    let message = again
        .err()
        .ok_or("creating a topic twice succeeded")?
        .to_string();
    assert!(message.contains("TopicAlreadyExists"), "{message}");
    Ok(())
}

/// Records and committed offsets survive the broker stopping (`kill -9` when `kill`,
/// else a clean stop) and starting again on the same directory and port.
async fn keeps_records_and_offsets_across_restarts(
    storage: impl Fn() -> Storage,
    kill: bool,
) -> TestResult {
    let port = free_port();
    let start = || {
        Broker::builder(storage())
            .port(port)
            .log_dir(test_log_dir()?)
            .start()
    };

    let mut broker = start()?;
    let topic = broker.create_unique_topic("kept", 3).await?;
    let group = unique_name("sink");
    produce(&broker, &topic, 1..31).await?;
    consume(&broker, &topic, &group, 30).await?;
    if kill {
        let pid = broker.pid().ok_or("no pid")?;
        std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()?;
    }
    broker.stop()?;
    drop(broker);

    let broker = start()?;
    assert_eq!(committed_total(&broker, &topic, &group)?, 30);
    let consumer: BaseConsumer = broker.client_config().create()?;
    let mut high = 0;
    for partition in 0..3 {
        high += consumer.fetch_watermarks(&topic, partition, TIMEOUT)?.1;
    }
    assert_eq!(high, 30, "all records survived");

    // The group resumes after its committed offsets: only the new records arrive.
    produce(&broker, &topic, 31..36).await?;
    let got = consume(&broker, &topic, &group, 5).await?;
    let rows: BTreeSet<u32> = got
        .iter()
        .map(|(_, row, _)| row.parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, (31..36).collect());
    Ok(())
}

#[tokio::test]
async fn sqlite_broker_keeps_records_and_offsets_across_restarts() -> TestResult {
    let dir = tempfile::tempdir()?;
    keeps_records_and_offsets_across_restarts(|| Storage::Sqlite(dir.path().to_path_buf()), false)
        .await?;
    assert!(dir.path().join("tansu.db").is_file());
    Ok(())
}

/// Apache Kafka keeps acknowledged records and committed offsets across a kill -9 of the
/// broker and a restart on the same directory.
#[tokio::test]
async fn kafka_keeps_records_and_offsets_across_a_kill() -> TestResult {
    let dir = tempfile::tempdir()?;
    keeps_records_and_offsets_across_restarts(|| Storage::Kafka(dir.path().to_path_buf()), true)
        .await
}

#[tokio::test]
async fn dropping_a_broker_stops_it() -> TestResult {
    let broker = Broker::start(Storage::Memory)?;
    let port = broker.port();
    assert_eq!(broker.bootstrap(), format!("127.0.0.1:{port}"));
    drop(broker);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    Ok(())
}

/// The connect-manager loss under a kill -9, reduced to the broker: 100 records sent as
/// one producer batch, a consumer that commits after 40 of them and goes away, and a new
/// member of the same group that must receive the other 60. This is what a restarted sink
/// does after a crash (it resumes from the offset it committed after its last write).
async fn resume_inside_a_batch(broker: &Broker) -> Result<usize, Box<dyn std::error::Error>> {
    let topic = broker.create_unique_topic("resume", 1).await?;
    let group = unique_name("sink");
    // A long linger puts the 100 records in one batch.
    let producer: FutureProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "500")
        .create()?;
    let sends = (0..100).map(|row| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let key = format!("file.csv:{row}");
            let record = FutureRecord::to(topic).key(&key).payload("x");
            producer.send(record, TIMEOUT).await.map_err(|(e, _)| e)
        }
    });
    try_join_all(sends).await?;

    let first = group_consumer(broker, &group)?;
    first.subscribe(&[topic.as_str()])?;
    for _ in 0..40 {
        tokio::time::timeout(TIMEOUT, first.recv()).await??;
    }
    let mut commit = rdkafka::TopicPartitionList::new();
    commit.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(40))?;
    first.commit(&commit, CommitMode::Sync)?;
    drop(first);

    let second = group_consumer(broker, &group)?;
    second.subscribe(&[topic.as_str()])?;
    let mut rows = BTreeSet::new();
    // The group has to settle first (the old member left); then records come quickly.
    let mut wait = Duration::from_secs(20);
    while let Ok(message) = tokio::time::timeout(wait, second.recv()).await {
        rows.insert(message?.offset());
        wait = Duration::from_secs(3);
    }
    assert!(
        rows.iter().all(|o| *o >= 40),
        "replayed below the commit: {rows:?}"
    );
    Ok(rows.len())
}

#[tokio::test]
async fn kafka_resumes_a_group_inside_a_producer_batch() -> TestResult {
    let broker = testkit::shared_broker()?;
    assert_eq!(resume_inside_a_batch(broker).await?, 60);
    Ok(())
}

#[tokio::test]
async fn tansu_sqlite_resumes_a_group_inside_a_producer_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(Storage::Sqlite(dir.path().to_path_buf()))
        .log_dir(test_log_dir()?)
        .start()?;
    assert_eq!(resume_inside_a_batch(&broker).await?, 60);
    Ok(())
}

/// tansu 0.6's memory engine drops the rest of the batch (see etl-stack's broker module
/// doc): the reason `etlctl up` runs Apache Kafka by default and memory is for
/// benchmarks only. If a tansu release fixes it, this fails: revisit that choice then.
#[tokio::test]
async fn tansu_memory_loses_the_rest_of_a_batch_for_a_resuming_group() -> TestResult {
    let broker = shared_tansu()?;
    assert_eq!(resume_inside_a_batch(broker).await?, 0);
    Ok(())
}
