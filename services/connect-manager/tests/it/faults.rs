//! What the connectors do when the input is wrong: a record the sink cannot decode
//! (FAILED by default, the dead letter queue when asked), files that do not fit the
//! topic's schema or hold no data. Nothing is lost and good data keeps flowing.

use std::{collections::HashMap, time::Duration};

use etl_core::{Value, envelope::Encoder};
use etl_proto::v1::CreateConnectorRequest;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::helpers::{Chunk, Stack, WAIT, eventually, review_schema};

const SINK: &str = "postgres-sink";
const SOURCE: &str = "sftp-csv-source";

/// Produces, in order to partition 0: `good_before` good records, one record whose
/// value is not an envelope, then `good_after` good records.
async fn produce_with_a_bad_record(stack: &Stack, good_before: u64, good_after: u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let encoder = Encoder::new(&review_schema());
    let send = |row: u64, payload: Vec<u8>| {
        let producer = producer.clone();
        let topic = stack.topic.clone();
        async move {
            let key = format!("dlq.csv:{row}");
            let row_text = row.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "etl.file",
                    value: Some("dlq.csv"),
                })
                .insert(Header {
                    key: "etl.row",
                    value: Some(row_text.as_str()),
                });
            producer
                .send(
                    FutureRecord::to(&topic)
                        .partition(0)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers),
                    Duration::from_secs(10),
                )
                .await
                .expect("delivered");
        }
    };
    let mut row = 0;
    for _ in 0..good_before {
        row += 1;
        send(row, encoder.encode(&[Value::Text(format!("row {row}"))])).await;
    }
    row += 1;
    send(row, b"{\"not\": \"an envelope\"".to_vec()).await;
    for _ in 0..good_after {
        row += 1;
        send(row, encoder.encode(&[Value::Text(format!("row {row}"))])).await;
    }
}

async fn create_topic(topic: &str) {
    let broker = tokio::task::spawn_blocking(testkit::shared_broker)
        .await
        .expect("join")
        .expect("broker");
    broker.create_topic(topic, 1).await.expect("topic");
}

async fn create_sink(stack: &Stack, overrides: &[(&str, &str)]) {
    let (name, config) = stack.connector("postgres-sink.json", overrides);
    stack
        .grpc()
        .await
        .create_connector(CreateConnectorRequest {
            name,
            config: config.into_iter().collect::<HashMap<_, _>>(),
        })
        .await
        .expect("sink created");
}

fn committed(stack: &Stack, group: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&stack.topic, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    committed
        .elements()
        .first()
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(-1)
}

/// errors.tolerance=none (the default): the rows before the bad record land and are
/// committed, the task goes FAILED naming topic, partition, offset and reason, and
/// the record (and everything after it) stays in Kafka, uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_fails_the_sink_and_stays_in_kafka() {
    let stack = Stack::start().await;
    create_topic(&stack.topic).await;
    produce_with_a_bad_record(&stack, 10, 5).await;
    create_sink(&stack, &[]).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 10).await;
    let status = eventually("sink FAILED", WAIT, || async {
        let s = stack.status(SINK).await;
        (s.state == "FAILED").then_some(s)
    })
    .await;
    let expected = format!("topic {} partition 0 offset 10", stack.topic);
    assert!(status.last_error.contains(&expected), "{status:?}");
    assert!(
        status.last_error.contains("cannot be decoded"),
        "{status:?}"
    );
    // Nothing after the bad record was written, and the commit stops before it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.count(&pg).await, 10);
    let group = format!("connect-{}", stack.topic);
    assert_eq!(
        committed(&stack, &group),
        10,
        "committed up to the bad record"
    );
}

/// errors.tolerance=all with a dead letter queue: every good row lands, and the bad
/// record goes to the queue as it was, with Kafka Connect's error headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_takes_undecodable_records() {
    let stack = Stack::start().await;
    create_topic(&stack.topic).await;
    let dlq = format!("{}-dlq", stack.topic);
    produce_with_a_bad_record(&stack, 4, 6).await;
    create_sink(
        &stack,
        &[
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", &dlq),
        ],
    )
    .await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 10).await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", testkit::unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[dlq.as_str()]).expect("subscribe");
    let m = tokio::time::timeout(WAIT, consumer.recv())
        .await
        .expect("a dead letter within the wait")
        .expect("record");
    assert_eq!(m.key(), Some(&b"dlq.csv:5"[..]));
    assert_eq!(m.payload(), Some(&b"{\"not\": \"an envelope\""[..]));
    let headers = m.headers().expect("headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("__connect.errors.topic"), Some(stack.topic.clone()));
    assert_eq!(header("__connect.errors.offset").as_deref(), Some("4"));
    assert!(header("__connect.errors.exception.message").is_some_and(|m| !m.is_empty()));
    assert_eq!(header("etl.file").as_deref(), Some("dlq.csv"));
    let status = stack.status(SINK).await;
    assert_eq!(status.state, "RUNNING", "{status:?}");
}

/// A dead letter queue without errors.tolerance=all is refused at create time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_needs_tolerance_all() {
    let stack = Stack::start().await;
    let (name, config) = stack.connector(
        "postgres-sink.json",
        &[("errors.deadletterqueue.topic.name", "x")],
    );
    let err = stack
        .grpc()
        .await
        .create_connector(CreateConnectorRequest {
            name,
            config: config.into_iter().collect(),
        })
        .await
        .expect_err("refused");
    assert!(err.message().contains("errors.tolerance=all"), "{err:?}");
}

async fn rejected_because(stack: &Stack, name: &str) -> String {
    let reason = format!("error/{name}.error.txt");
    stack.wait_for_file(&reason).await;
    stack.wait_for_file(&format!("error/{name}")).await;
    std::fs::read_to_string(stack.local(&reason)).expect("reason")
}

/// The first file pins the topic's schema: a later file with other columns or a value
/// of another type goes to error/ naming the column (Python's `False` in a boolean
/// column is a boolean, not another type); a file with a header and no row is
/// rejected, not finished; good files keep landing; the table keeps its types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_do_not_fit_go_to_error_and_good_ones_still_land() {
    let stack = Stack::start().await;
    stack.create_connectors().await;
    let first = Chunk::tricky(20, "p");
    stack.upload("first.tsv", &first.tsv()).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 20).await;

    // An extra column.
    let mut extra = Chunk::tricky(5, "x");
    extra.header.push("rating".into());
    for r in &mut extra.rows {
        r.push("5".into());
    }
    stack.upload("extra.tsv", &extra.tsv()).await;
    // `yes` where the schema has a boolean.
    let mut wrong = Chunk::tricky(5, "b");
    let col = wrong
        .header
        .iter()
        .position(|h| h == "is_streaming")
        .expect("is_streaming column");
    wrong.rows[2][col] = "yes".into();
    stack.upload("wrong.tsv", &wrong.tsv()).await;
    // `False` (Python's spelling) fits the boolean column.
    let mut python = Chunk::tricky(5, "p");
    python.rows[2][col] = "False".into();
    stack.upload("python.tsv", &python.tsv()).await;
    // A header and nothing else; an empty file.
    stack.upload("header-only.tsv", b"header\tbody\n").await;
    stack.upload("empty.tsv", b"").await;
    let good = Chunk::tricky(7, "g");
    stack.upload("good.tsv", &good.tsv()).await;
    stack.wait_for_rows(&pg, 32).await;

    let text = rejected_because(&stack, "extra.tsv").await;
    assert!(text.contains("\"rating\""), "{text}");
    let text = rejected_because(&stack, "wrong.tsv").await;
    assert!(
        text.contains("\"is_streaming\"") && text.contains("\"yes\"") && text.contains("row 3"),
        "{text}"
    );
    let python_row: bool = pg
        .query_one(
            "SELECT is_streaming FROM review WHERE _etl_file = 'python.tsv' AND _etl_row = 3",
            &[],
        )
        .await
        .expect("python.tsv row 3")
        .get(0);
    assert!(!python_row, "False lands as the boolean false");
    let text = rejected_because(&stack, "header-only.tsv").await;
    assert!(text.contains("no data row"), "{text}");
    let _ = rejected_because(&stack, "empty.tsv").await;

    let types: Vec<(String, String)> = pg
        .query(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'review' AND column_name IN ('is_streaming', 'rating') \
             ORDER BY 1",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        types,
        vec![("is_streaming".to_string(), "boolean".to_string())]
    );
    eventually("status counts", WAIT, || async {
        let s = stack.status(SOURCE).await;
        (s.files_failed == 4 && s.files_finished == 3).then_some(())
    })
    .await;
}

/// The other kinds of bad input the fault suite names: each ends where the README
/// says, and a good file uploaded after them all still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_files_end_in_finished_or_error_and_good_data_flows() {
    let stack = Stack::start().await;
    stack.create_connectors().await;
    let first = Chunk::tricky(10, "f");
    stack.upload("first.tsv", &first.tsv()).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 10).await;

    // A byte-order mark and CRLF line endings: a good file all the same.
    let bom = Chunk::tricky(4, "bom");
    let mut data = b"\xEF\xBB\xBF".to_vec();
    data.extend(
        String::from_utf8(bom.tsv())
            .expect("utf8")
            .replace('\n', "\r\n")
            .into_bytes(),
    );
    stack.upload("bom crlf.tsv", &data).await;
    // A name with spaces and non-ASCII letters.
    let named = Chunk::tricky(3, "n");
    stack.upload("avis clients é ü.tsv", &named.tsv()).await;
    // A 20 MB line: one row far larger than a Kafka record.
    let mut huge = Chunk::tricky(1, "h");
    huge.rows[0][1] = "x".repeat(20 * 1024 * 1024);
    stack.upload("huge.tsv", &huge.tsv()).await;
    // A binary file.
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    stack.upload("binary.csv", &binary).await;
    let good = Chunk::tricky(6, "last");
    stack.upload("last.tsv", &good.tsv()).await;

    stack.wait_for_rows(&pg, 10 + 4 + 3 + 6).await;
    for name in ["bom crlf.tsv", "avis clients é ü.tsv", "last.tsv"] {
        stack.wait_for_file(&format!("finished/{name}")).await;
    }
    let text = rejected_because(&stack, "huge.tsv").await;
    assert!(
        text.contains("data row 1") && text.contains("bytes"),
        "{text}"
    );
    let _ = rejected_because(&stack, "binary.csv").await;
    // The BOM file's rows are intact (the mark is not part of the first column).
    let header: Vec<String> = pg
        .query(
            "SELECT header FROM review WHERE _etl_file = 'bom crlf.tsv' ORDER BY _etl_row",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = bom.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(header, expected);
}
