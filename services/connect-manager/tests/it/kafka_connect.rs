//! Kafka Connect's connector options honoured end to end: `insert.mode=update`,
//! every `pk.mode`, `fields.whitelist`, `quote.sql.identifiers`, tombstones,
//! `topics.regex`, `max.retries` and `connection.attempts` that stop the task,
//! `behavior.on.error=FAIL`; two sinks on one topic; Python's `False` landing as a
//! boolean and a declared `value.schema` winning over inference; and the original
//! project's two connector JSON files, with only their hosts changed.

use std::{collections::HashMap, time::Duration};

use etl_core::{Field, FieldType, Schema, Value, envelope::Encoder};
use etl_proto::v1::CreateConnectorRequest;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value as Json, json};

use crate::helpers::{Chunk, Stack, WAIT, eventually};

fn schema(fields: &[(&str, FieldType)]) -> Schema {
    Schema {
        name: "review".into(),
        fields: fields
            .iter()
            .map(|(name, ty)| Field {
                name: name.to_string(),
                ty: *ty,
                optional: true,
            })
            .collect(),
    }
}

/// Sends `records` (key, value; None is a tombstone) in order to partition 0.
async fn produce(stack: &Stack, topic: &str, records: &[(String, Option<Vec<u8>>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (key, value) in records {
        let mut record = FutureRecord::<String, Vec<u8>>::to(topic)
            .partition(0)
            .key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
}

async fn create_topic(topic: &str, partitions: i32) {
    let broker = tokio::task::spawn_blocking(testkit::shared_broker)
        .await
        .expect("join")
        .expect("broker");
    broker.create_topic(topic, partitions).await.expect("topic");
}

/// Offsets `group` committed on `topic`, added up over its partitions.
async fn committed(stack: &Stack, group: &str, topic: &str, partitions: i32) -> i64 {
    let (brokers, group, topic) = (stack.brokers.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed");
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    })
    .await
    .expect("join")
}

async fn wait_committed(stack: &Stack, group: &str, topic: &str, partitions: i32, n: i64) {
    eventually(
        &format!("group {group} to commit {n} records of {topic}"),
        WAIT,
        || async { (committed(stack, group, topic, partitions).await == n).then_some(()) },
    )
    .await;
}

/// Creates a connector over gRPC.
async fn create(stack: &Stack, name: &str, config: HashMap<String, String>) {
    stack
        .grpc()
        .await
        .create_connector(CreateConnectorRequest {
            name: name.to_string(),
            config,
        })
        .await
        .unwrap_or_else(|e| panic!("{name} created: {e:?}"));
}

/// The sink of `deploy/connectors/` with `overrides`, under a name (and, unless an
/// override sets one, a consumer group `connect-<name>`) of its own.
fn sink(
    stack: &Stack,
    prefix: &str,
    overrides: &[(&str, &str)],
) -> (String, HashMap<String, String>) {
    let (_, mut config) = stack.connector("postgres-sink.json", &[]);
    config.remove("consumer.override.group.id");
    for (k, v) in overrides {
        config.insert(k.to_string(), v.to_string());
    }
    (testkit::unique_name(prefix), config)
}

async fn rows(pg: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    pg.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect()
}

async fn count(pg: &tokio_postgres::Client, table: &str) -> i64 {
    match pg
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => 0,
    }
}

async fn wait_count(pg: &tokio_postgres::Client, table: &str, n: i64) {
    eventually(&format!("{n} rows in {table}"), WAIT, || async {
        (count(pg, table).await == n).then_some(())
    })
    .await;
}

/// The (name, type) of every column of `table`, in order.
async fn columns(pg: &tokio_postgres::Client, table: &str) -> Vec<(String, String)> {
    pg.query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .await
    .expect("columns")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn upload(stack: &Stack, dir: &str, name: &str, data: &[u8]) {
    let sftp = stack.sftp().await;
    sftp.mkdir_all(dir).await.expect("mkdir");
    sftp.write_atomic(dir, name, data).await.expect("upload");
    let _ = sftp.close().await;
}

/// A sink (its connector config with `overrides`) started over `review` made
/// by hand, keyed on the lineage and holding rows 1..=3 of `u.csv` with bodies
/// `old 1`..`old 3`, once its group committed the records `first` of `u.csv`
/// (see [`new_bodies`]), produced before it started.
struct OverOldRows {
    stack: Stack,
    pg: tokio_postgres::Client,
    name: String,
    group: String,
}

impl OverOldRows {
    async fn start(overrides: &[(&str, &str)], first: std::ops::RangeInclusive<u32>) -> Self {
        let stack = Stack::start().await;
        create_topic(&stack.topic, 1).await;
        let pg = stack.pg().await;
        old_rows(&pg).await;
        let records = new_bodies(first);
        produce(&stack, &stack.topic, &records).await;
        let (name, config) = stack.connector("postgres-sink.json", overrides);
        create(&stack, &name, config).await;
        let group = format!("connect-{}", stack.topic);
        wait_committed(&stack, &group, &stack.topic, 1, records.len() as i64).await;
        Self {
            stack,
            pg,
            name,
            group,
        }
    }

    /// `review`'s rows as (row, body), by row.
    async fn bodies(&self) -> Vec<Vec<String>> {
        rows(
            &self.pg,
            "SELECT _etl_row::text, body FROM review ORDER BY _etl_row",
        )
        .await
    }
}

/// `review` made by hand, as [`OverOldRows`] describes it.
async fn old_rows(pg: &tokio_postgres::Client) {
    pg.batch_execute(
        "CREATE TABLE review (body text, _etl_file text NOT NULL, _etl_row bigint NOT NULL, \
         _etl_trace_id text, _etl_loaded_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (_etl_file, _etl_row)); \
         INSERT INTO review (body, _etl_file, _etl_row) VALUES \
         ('old 1', 'u.csv', 1), ('old 2', 'u.csv', 2), ('old 3', 'u.csv', 3)",
    )
    .await
    .expect("table");
}

/// Records for rows `rows` of `u.csv`, each with body `new <row>`.
fn new_bodies(rows: std::ops::RangeInclusive<u32>) -> Vec<(String, Option<Vec<u8>>)> {
    let encoder = Encoder::new(&schema(&[("body", FieldType::String)]));
    rows.map(|n| {
        (
            format!("u.csv:{n}"),
            Some(encoder.encode(&[Value::Text(format!("new {n}"))])),
        )
    })
    .collect()
}

/// insert.mode=update: rows whose key exists change; a record whose key matches no
/// row inserts nothing, and its offset is committed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_changes_existing_rows_and_inserts_none() {
    let sink = OverOldRows::start(&[("insert.mode", "update")], 2..=5).await;
    assert_eq!(
        sink.bodies().await,
        vec![
            vec!["1".to_string(), "old 1".to_string()],
            vec!["2".to_string(), "new 2".to_string()],
            vec!["3".to_string(), "new 3".to_string()],
        ],
        "rows 2 and 3 updated, 4 and 5 not inserted"
    );
    assert_eq!(sink.stack.status(&sink.name).await.state, "RUNNING");
}

/// insert.mode=upsert (the default) where some rows are there already: new
/// rows go straight in with a COPY, and a batch meeting existing keys falls
/// back to the upsert, so rows 2 and 3 change, 4 and 5 are added and row 1
/// stays. On a table made by hand without a key on the record's key, no
/// straight COPY is tried (it could not fail on a row already there): the
/// upsert says why it cannot run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_mode_changes_existing_rows_and_adds_new_ones() {
    // First a batch of new rows only, then one that meets rows already there.
    let sink = OverOldRows::start(&[], 6..=7).await;
    let OverOldRows {
        stack,
        pg,
        name,
        group,
    } = &sink;
    produce(stack, &stack.topic, &new_bodies(2..=5)).await;
    wait_committed(stack, group, &stack.topic, 1, 6).await;
    let want: Vec<Vec<String>> = [
        (1, "old 1"),
        (2, "new 2"),
        (3, "new 3"),
        (4, "new 4"),
        (5, "new 5"),
        (6, "new 6"),
        (7, "new 7"),
    ]
    .iter()
    .map(|(n, b)| vec![n.to_string(), b.to_string()])
    .collect();
    assert_eq!(sink.bodies().await, want);
    assert_eq!(stack.status(name).await.state, "RUNNING");

    // A second sink into a table without a key: nothing written, a clear error.
    pg.batch_execute(
        "CREATE TABLE keyless (body text, _etl_file text NOT NULL, _etl_row bigint NOT NULL, \
         _etl_trace_id text, _etl_loaded_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .expect("table");
    let (_, mut config) = stack.connector(
        "postgres-sink.json",
        &[("table.name.format", "keyless"), ("max.retries", "0")],
    );
    config.insert(
        "consumer.override.group.id".into(),
        format!("{group}-keyless"),
    );
    create(stack, "keyless-sink", config).await;
    let status = eventually("the keyless sink to fail", WAIT, || async {
        let status = stack.status("keyless-sink").await;
        (status.state == "FAILED").then_some(status)
    })
    .await;
    assert!(
        status.last_error.contains("ON CONFLICT"),
        "the reason names the missing key: {}",
        status.last_error
    );
    assert_eq!(count(pg, "keyless").await, 0);
}

/// Two more sinks on one topic, each its own consumer group: pk.mode=kafka keys
/// every record by topic, partition and offset; pk.mode=record_value keys by a
/// field (the last record of a key wins, lineage following it), with
/// fields.whitelist dropping a field and quote.sql.identifiers=never folding names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_and_record_value_keys_with_whitelist_and_folded_names() {
    let stack = Stack::start().await;
    create_topic(&stack.topic, 1).await;
    let encoder = Encoder::new(&schema(&[
        ("ID", FieldType::Int64),
        ("Body", FieldType::String),
        ("Secret", FieldType::String),
    ]));
    let records: Vec<(String, Option<Vec<u8>>)> = [(1, "a"), (2, "b"), (1, "c")]
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            (
                format!("k.csv:{}", i + 1),
                Some(encoder.encode(&[
                    Value::Int(*id),
                    Value::Text(body.to_string()),
                    Value::Text("s".into()),
                ])),
            )
        })
        .collect();
    produce(&stack, &stack.topic, &records).await;
    let (kafka_name, kafka) = sink(
        &stack,
        "kafka-keys",
        &[
            ("table.name.format", "kafka_${topic}"),
            ("pk.mode", "kafka"),
            ("insert.mode", "insert"),
        ],
    );
    create(&stack, &kafka_name, kafka).await;
    let (value_name, value) = sink(
        &stack,
        "value-keys",
        &[
            ("table.name.format", "By_Value"),
            ("quote.sql.identifiers", "never"),
            ("pk.mode", "record_value"),
            ("pk.fields", "ID"),
            ("fields.whitelist", "Body"),
        ],
    );
    create(&stack, &value_name, value).await;

    let pg = stack.pg().await;
    let kafka_table = format!("kafka_{}", stack.topic);
    wait_count(&pg, &kafka_table, 3).await;
    assert_eq!(
        rows(
            &pg,
            &format!(
                "SELECT \"Body\", __connect_topic, __connect_partition::text, __connect_offset::text, \
                 _etl_row::text FROM \"{kafka_table}\" ORDER BY __connect_offset"
            )
        )
        .await,
        [("a", "0", "1"), ("b", "1", "2"), ("c", "2", "3")]
            .iter()
            .map(|(b, o, r)| vec![
                b.to_string(),
                stack.topic.clone(),
                "0".to_string(),
                o.to_string(),
                r.to_string()
            ])
            .collect::<Vec<_>>()
    );

    wait_committed(&stack, &format!("connect-{value_name}"), &stack.topic, 1, 3).await;
    assert_eq!(
        rows(
            &pg,
            "SELECT id::text, body, _etl_file, _etl_row::text FROM by_value ORDER BY id"
        )
        .await,
        vec![
            vec!["1".to_string(), "c".into(), "k.csv".into(), "3".into()],
            vec!["2".to_string(), "b".into(), "k.csv".into(), "2".into()],
        ],
        "the last record of a key wins, and the lineage follows it"
    );
    let names: Vec<String> = columns(&pg, "by_value")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "body",
            "_etl_file",
            "_etl_row",
            "_etl_trace_id",
            "_etl_loaded_at"
        ]
    );
    let key: Vec<String> = rows(
        &pg,
        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
         ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = 'by_value'::regclass AND i.indisprimary",
    )
    .await
    .concat();
    assert_eq!(key, ["id"]);
}

/// Two sinks on the topic the source feeds, each its own consumer group (one the
/// default connect-<name>, one from consumer.override.group.id), writing different
/// tables in different databases: both receive every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_on_one_topic_each_get_every_row() {
    let stack = Stack::start().await;
    stack.create_connectors().await;
    let other_db_url = testkit::shared_postgres()
        .expect("postgres")
        .create_unique_database("cm_copy")
        .await
        .expect("second database");
    let other_db = other_db_url
        .rsplit('/')
        .next()
        .expect("db name")
        .to_string();
    let url = format!("jdbc:postgresql://127.0.0.1:{}/{other_db}", stack.pg_port);
    let (second, config) = sink(
        &stack,
        "second-sink",
        &[
            ("connection.url", url.as_str()),
            ("table.name.format", "review_copy"),
        ],
    );
    create(&stack, &second, config).await;

    let chunk = Chunk::tricky(50, "two");
    upload(&stack, "input", "two.tsv", &chunk.tsv()).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 50).await;
    let other = testkit::shared_postgres()
        .expect("postgres")
        .connect(&other_db)
        .await
        .expect("second database connects");
    wait_count(&other, "review_copy", 50).await;
    let sql =
        |table: &str| format!("SELECT header, body, _etl_row::text FROM {table} ORDER BY _etl_row");
    assert_eq!(
        rows(&pg, &sql("review")).await,
        rows(&other, &sql("review_copy")).await
    );
    for group in [
        format!("connect-{}", stack.topic),
        format!("connect-{second}"),
    ] {
        wait_committed(&stack, &group, &stack.topic, 3, 50).await;
    }
}

/// Python's `False`/`True` (what the original extractor wrote) land as booleans, in
/// the first file and in files after it; a source with an explicit value.schema
/// sends the declared types instead of the inferred ones (here with a line before
/// the header skipped and empty fields as nulls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_booleans_land_as_booleans_and_a_declared_schema_wins() {
    let stack = Stack::start().await;
    stack.create_connectors().await;
    let col = 3; // is_streaming
    let mut python = Chunk::tricky(10, "py");
    for (i, r) in python.rows.iter_mut().enumerate() {
        r[col] = if i % 2 == 0 { "True" } else { "False" }.into();
    }
    upload(&stack, "input", "python.tsv", &python.tsv()).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 10).await;
    let mut upper = Chunk::tricky(4, "up");
    for r in &mut upper.rows {
        r[col] = "FALSE".into();
    }
    upload(&stack, "input", "upper.tsv", &upper.tsv()).await;
    upload(&stack, "input", "lower.tsv", &Chunk::tricky(6, "lo").tsv()).await;
    stack.wait_for_rows(&pg, 20).await;
    assert!(
        columns(&pg, "review")
            .await
            .contains(&("is_streaming".to_string(), "boolean".to_string()))
    );
    let flags = rows(
        &pg,
        "SELECT _etl_file, string_agg(is_streaming::text, ',' ORDER BY _etl_row) \
         FROM review GROUP BY _etl_file ORDER BY _etl_file",
    )
    .await;
    assert_eq!(
        flags,
        vec![
            vec![
                "lower.tsv".to_string(),
                "true,false,true,false,true,false".into()
            ],
            vec![
                "python.tsv".to_string(),
                "true,false,true,false,true,false,true,false,true,false".into()
            ],
            vec!["upper.tsv".to_string(), "false,false,false,false".into()],
        ]
    );
    assert_eq!(stack.status("sftp-csv-source").await.files_failed, 0);

    // A second source and sink: value.schema says n is text and is_streaming a
    // boolean; the column `extra` is not declared, so it is not sent.
    let topic = format!("{}_declared", stack.topic);
    // As written, not through serde_json::Value (whose maps sort their keys): the
    // order of fieldSchemas is the order of the fields.
    let declared = r#"{"name": "review", "type": "STRUCT", "isOptional": false,
        "fieldSchemas": {
            "header": {"type": "STRING", "isOptional": true},
            "n": {"type": "STRING", "isOptional": true},
            "is_streaming": {"type": "BOOLEAN", "isOptional": true}
        }}"#;
    let (_, mut source) = stack.connector(
        "sftp-source.json",
        &[
            ("kafka.topic", topic.as_str()),
            ("input.path", "declared"),
            ("finished.path", "declared-done"),
            ("error.path", "declared-error"),
            ("file.poll.interval.ms", "200"),
            ("csv.skip.lines", "1"),
            ("csv.null.field.indicator", "BOTH"),
        ],
    );
    source.insert("value.schema".into(), declared.to_string());
    source.remove("etl.gateway.url");
    create(&stack, &testkit::unique_name("declared-source"), source).await;
    let (name, config) = sink(
        &stack,
        "declared-sink",
        &[
            ("topics", topic.as_str()),
            ("table.name.format", "declared"),
        ],
    );
    create(&stack, &name, config).await;
    upload(
        &stack,
        "declared",
        "d.tsv",
        b"# exported by the old tool\nheader\tn\tis_streaming\textra\nh1\t007\tFalse\tx\n\t42\tTRUE\ty\n",
    )
    .await;
    wait_count(&pg, "declared", 2).await;
    assert_eq!(
        columns(&pg, "declared").await[..3],
        pairs(&[
            ("header", "text"),
            ("n", "text"),
            ("is_streaming", "boolean")
        ])
    );
    assert!(
        !columns(&pg, "declared")
            .await
            .iter()
            .any(|(c, _)| c == "extra")
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT coalesce(header, 'NULL'), n, is_streaming::text FROM declared ORDER BY _etl_row"
        )
        .await,
        vec![
            vec!["h1".to_string(), "007".into(), "false".into()],
            vec!["NULL".to_string(), "42".into(), "true".into()],
        ]
    );
}

/// The original project's connector JSON, as it was, with only the hosts (and the
/// topic) changed: both are accepted over REST and a tab-separated file lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_connector_json_is_accepted_and_a_file_lands() {
    let stack = Stack::start().await;
    let source = json!({
        "connector.class": "io.confluent.connect.sftp.SftpCsvSourceConnector",
        "tasks.max": "1",
        "sftp.host": "127.0.0.1",
        "sftp.port": stack.gateway.sftp_addr.port().to_string(),
        "sftp.username": "etl",
        "sftp.password": "etl",
        "input.path": "/input",
        "finished.path": "/finished",
        "error.path": "/error",
        "input.file.pattern": ".*\\.csv",
        "kafka.topic": stack.topic,
        "csv.first.row.as.header": "true",
        "csv.separator.char": "9",
        "cleanup.policy": "MOVE",
        "behavior.on.error": "LOG",
        "schema.generation.enabled": "true"
    });
    let sink = json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
        "tasks.max": "1",
        "topics": stack.topic,
        "connection.url": format!("jdbc:postgresql://127.0.0.1:{}/{}", stack.pg_port, stack.db),
        "connection.user": "postgres",
        "connection.password": "postgres",
        "auto.create": "true",
        "insert.mode": "insert",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true"
    });
    let http = reqwest::Client::new();
    for (prefix, config) in [("sftp-csv-source", source), ("jdbc-sink", sink)] {
        let name = testkit::unique_name(prefix);
        let response = http
            .post(stack.rest_url("/connectors"))
            .json(&json!({"name": name, "config": config}))
            .send()
            .await
            .expect("POST /connectors");
        let code = response.status();
        let body: Json = response.json().await.expect("JSON");
        assert_eq!(code.as_u16(), 201, "{prefix}: {body}");
    }

    let chunk = Chunk::tricky(25, "orig");
    upload(&stack, "input", "original.csv", &chunk.tsv()).await;
    let pg = stack.pg().await;
    // No table.name.format: the table is named after the topic.
    wait_count(&pg, &stack.topic, 25).await;
    stack.wait_for_file("finished/original.csv").await;
    assert!(
        columns(&pg, &stack.topic)
            .await
            .contains(&("is_streaming".to_string(), "boolean".to_string()))
    );
    let bodies = rows(
        &pg,
        &format!("SELECT body FROM \"{}\" ORDER BY _etl_row", stack.topic),
    )
    .await
    .concat();
    let expected: Vec<String> = chunk.rows.iter().map(|r| r[1].clone()).collect();
    assert_eq!(bodies, expected);
}

/// delete.enabled: a record without a value deletes the row of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_rows_when_delete_is_enabled() {
    let stack = Stack::start().await;
    create_topic(&stack.topic, 1).await;
    let encoder = Encoder::new(&schema(&[("body", FieldType::String)]));
    let mut records: Vec<(String, Option<Vec<u8>>)> = (1..=3)
        .map(|n| {
            (
                format!("t.csv:{n}"),
                Some(encoder.encode(&[Value::Text(format!("row {n}"))])),
            )
        })
        .collect();
    records.push(("t.csv:2".into(), None));
    produce(&stack, &stack.topic, &records).await;
    let (name, config) = stack.connector("postgres-sink.json", &[("delete.enabled", "true")]);
    create(&stack, &name, config).await;
    wait_committed(
        &stack,
        &format!("connect-{}", stack.topic),
        &stack.topic,
        1,
        4,
    )
    .await;
    let pg = stack.pg().await;
    assert_eq!(
        rows(&pg, "SELECT _etl_row::text FROM review ORDER BY _etl_row")
            .await
            .concat(),
        ["1", "3"]
    );
    // A tombstone for a row written in an earlier batch deletes it too.
    produce(&stack, &stack.topic, &[("t.csv:3".into(), None)]).await;
    wait_count(&pg, "review", 1).await;
}

/// topics.regex reads every matching topic, and table.name.format's ${topic} sends
/// each topic's records to a table of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_regex_reads_every_matching_topic_into_its_own_table() {
    let stack = Stack::start().await;
    let (a, b) = (format!("{}_a", stack.topic), format!("{}_b", stack.topic));
    create_topic(&a, 1).await;
    create_topic(&b, 1).await;
    let encoder = Encoder::new(&schema(&[("body", FieldType::String)]));
    let record = |file: &str, n: u32| {
        (
            format!("{file}:{n}"),
            Some(encoder.encode(&[Value::Text(format!("{file} {n}"))])),
        )
    };
    produce(&stack, &a, &[record("a.csv", 1), record("a.csv", 2)]).await;
    produce(
        &stack,
        &b,
        &[record("b.csv", 1), record("b.csv", 2), record("b.csv", 3)],
    )
    .await;
    let pattern = format!("{}_.*", stack.topic);
    let (name, mut config) = sink(
        &stack,
        "regex-sink",
        &[
            ("topics.regex", pattern.as_str()),
            ("table.name.format", "t_${topic}"),
        ],
    );
    config.remove("topics");
    create(&stack, &name, config).await;
    let pg = stack.pg().await;
    wait_count(&pg, &format!("t_{a}"), 2).await;
    wait_count(&pg, &format!("t_{b}"), 3).await;
}

/// max.retries: a batch Postgres keeps refusing stops the task, FAILED with the
/// error, and it stays stopped; connection.attempts does the same for a database
/// that cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_used_up_stop_the_sink_failed() {
    let stack = Stack::start().await;
    create_topic(&stack.topic, 1).await;
    let encoder = Encoder::new(&schema(&[("body", FieldType::String)]));
    produce(
        &stack,
        &stack.topic,
        &[(
            "r.csv:1".into(),
            Some(encoder.encode(&[Value::Text("x".into())])),
        )],
    )
    .await;
    let (refused, config) = sink(
        &stack,
        "refused",
        &[
            ("auto.create", "false"),
            ("max.retries", "2"),
            ("retry.backoff.ms", "100"),
        ],
    );
    create(&stack, &refused, config).await;
    let port = testkit::free_port().to_string();
    let url = format!("jdbc:postgresql://127.0.0.1:{port}/nowhere");
    let (unreachable, config) = sink(
        &stack,
        "unreachable",
        &[
            ("connection.url", url.as_str()),
            ("connection.attempts", "2"),
            ("connection.backoff.ms", "100"),
        ],
    );
    create(&stack, &unreachable, config).await;

    for (name, mentions) in [
        (&refused, ["does not exist", "max.retries=2"]),
        (&unreachable, ["cannot connect", "connection.attempts=2"]),
    ] {
        // FAILED while it retries, then FAILED for good, saying why it gave up.
        let status = eventually(&format!("{name} to give up"), WAIT, || async {
            let s = stack.status(name).await;
            (s.state == "FAILED" && s.last_error.contains(mentions[1])).then_some(s)
        })
        .await;
        assert!(status.last_error.contains(mentions[0]), "{status:?}");
    }
    // Stopped for good: still FAILED later, nothing written, nothing committed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in [&refused, &unreachable] {
        assert_eq!(stack.status(name).await.state, "FAILED");
    }
    assert_eq!(
        committed(&stack, &format!("connect-{refused}"), &stack.topic, 1).await,
        0
    );
}

/// behavior.on.error=FAIL: a file that does not parse goes to error/ and the source
/// stops, FAILED naming it; files after it wait in input/ until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behavior_on_error_fail_stops_the_source() {
    let stack = Stack::start().await;
    let (name, config) = stack.connector(
        "sftp-source.json",
        &[
            ("behavior.on.error", "FAIL"),
            ("file.poll.interval.ms", "200"),
        ],
    );
    create(&stack, &name, config).await;
    upload(&stack, "input", "ragged.csv", b"a,b\n1,2\n3\n").await;
    stack.wait_for_file("error/ragged.csv").await;
    let status = eventually("source FAILED", WAIT, || async {
        let s = stack.status(&name).await;
        (s.state == "FAILED").then_some(s)
    })
    .await;
    assert!(
        status.last_error.contains("ragged.csv") && status.last_error.contains("FAIL"),
        "{status:?}"
    );
    upload(&stack, "input", "later.tsv", &Chunk::tricky(2, "l").tsv()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stack.local("input/later.tsv").exists(),
        "not taken while FAILED"
    );
    assert_eq!(stack.status(&name).await.state, "FAILED");
}

/// Values of every field type land as sent whichever `COPY` format carries
/// them: binary into a table the sink made (it writes every column type
/// there), text into a table made by hand with a column type it leaves to
/// Postgres (`numeric`). Two sinks read the same records, one into each; both
/// tables read back alike, with the values sent (NUL dropped: Postgres text
/// cannot hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_alike_through_binary_and_text_copy() {
    use chrono::{DateTime, Utc};
    let stack = Stack::start().await;
    create_topic(&stack.topic, 1).await;
    let pg = stack.pg().await;
    let text_table = format!("typed_text_{}", stack.topic.replace('-', "_"));
    let bin_table = format!("typed_bin_{}", stack.topic.replace('-', "_"));
    pg.batch_execute(&format!(
        "CREATE TABLE {text_table} (s text, i bigint, d double precision, b boolean, \
         t timestamptz, n numeric, _etl_file text NOT NULL, _etl_row bigint NOT NULL, \
         _etl_trace_id text, _etl_loaded_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (_etl_file, _etl_row))"
    ))
    .await
    .expect("table");
    let encoder = Encoder::new(&schema(&[
        ("s", FieldType::String),
        ("i", FieldType::Int64),
        ("d", FieldType::Double),
        ("b", FieldType::Boolean),
        ("t", FieldType::Timestamp),
        ("n", FieldType::Int64),
    ]));
    let at = |s: &str| {
        Value::Timestamp(
            DateTime::parse_from_rfc3339(s)
                .expect("timestamp")
                .with_timezone(&Utc),
        )
    };
    let text = |s: &str| Value::Text(s.into());
    let sent = [
        vec![
            text("plain"),
            Value::Int(0),
            Value::Double(0.5),
            Value::Bool(true),
            at("2000-01-01T00:00:00Z"),
            Value::Int(1),
        ],
        vec![
            text("tab\there, new\nline, back\\slash, cr\r, nul\0, é ✓"),
            Value::Int(i64::MIN),
            Value::Double(-1e300),
            Value::Bool(false),
            at("1969-07-20T20:17:40.123Z"),
            Value::Int(i64::MAX),
        ],
        vec![Value::Null; 6],
        vec![
            text(""),
            Value::Int(i64::MAX),
            Value::Double(f64::MIN_POSITIVE),
            Value::Bool(true),
            at("2262-04-11T23:47:16.854Z"),
            Value::Int(-1),
        ],
    ];
    let records: Vec<(String, Option<Vec<u8>>)> = sent
        .iter()
        .enumerate()
        .map(|(n, v)| (format!("u.csv:{}", n + 1), Some(encoder.encode(v))))
        .collect();
    produce(&stack, &stack.topic, &records).await;
    for table in [&bin_table, &text_table] {
        let (name, config) = sink(&stack, table, &[("table.name.format", table)]);
        create(&stack, &name, config).await;
        let group = format!("connect-{name}");
        wait_committed(&stack, &group, &stack.topic, 1, records.len() as i64).await;
    }

    let read = |table: &str| {
        format!(
            "SELECT _etl_row::text, coalesce(s, '-'), coalesce(i::text, '-'), \
             coalesce(d::text, '-'), coalesce(b::text, '-'), \
             coalesce(to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), '-'), \
             coalesce(n::text, '-') FROM {table} ORDER BY _etl_row"
        )
    };
    let binary = rows(&pg, &read(&bin_table)).await;
    assert_eq!(binary, rows(&pg, &read(&text_table)).await);
    let want: Vec<Vec<String>> = [
        [
            "1",
            "plain",
            "0",
            "0.5",
            "true",
            "2000-01-01 00:00:00.000",
            "1",
        ],
        [
            "2",
            "tab\there, new\nline, back\\slash, cr\r, nul, é ✓",
            "-9223372036854775808",
            "-1e+300",
            "false",
            "1969-07-20 20:17:40.123",
            "9223372036854775807",
        ],
        ["3", "-", "-", "-", "-", "-", "-"],
        [
            "4",
            "",
            "9223372036854775807",
            "2.2250738585072014e-308",
            "true",
            "2262-04-11 23:47:16.854",
            "-1",
        ],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(binary, want);
}
