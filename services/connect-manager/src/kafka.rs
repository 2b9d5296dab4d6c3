//! Kafka clients, configured once here: the idempotent producer of the
//! source, the manually committing consumer of the sink, topic creation, and
//! the metadata probe behind the health status.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::KafkaResult,
    producer::FutureProducer,
    types::RDKafkaErrorCode,
};

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

/// Every record of a file acknowledged by all replicas, exactly once per send.
pub(crate) fn producer(brokers: &str) -> KafkaResult<FutureProducer> {
    base(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // A file whose records cannot be delivered in this time is retried later.
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
}

/// A consumer in `group` that commits only what the sink wrote.
pub(crate) fn consumer(brokers: &str, group: &str) -> KafkaResult<StreamConsumer> {
    base(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka's default lets a fetch idle for 500 ms (see DESIGN facts).
        .set("fetch.wait.max.ms", "10")
        .set("enable.partition.eof", "false")
        .create()
}

/// Creates `topic` unless it exists (tansu does not auto-create topics).
pub(crate) async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        base(brokers).create().map_err(|e| e.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .map_err(|e| format!("cannot create topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(format!("cannot create topic {topic}: {code}")),
        }
    }
    Ok(())
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
