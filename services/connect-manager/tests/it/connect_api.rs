//! The Kafka Connect REST API over HTTP, as curl would drive it: every endpoint
//! with its status codes and JSON shapes, truthful states (a sink Postgres
//! refuses goes FAILED with its trace), pause/resume/stop/restart that really
//! stop and start the tasks, offsets of stopped connectors, validate naming
//! unknown and unsupported keys, and the same operations over gRPC.

use std::{collections::HashMap, time::Duration};

use etl_core::{Value, envelope::Encoder};
use etl_proto::v1::{
    AlterConnectorOffsetsRequest, ConnectorOffset, GetConnectorOffsetsRequest,
    PauseConnectorRequest, RestartConnectorRequest, ResumeConnectorRequest, StopConnectorRequest,
    ValidateConnectorConfigRequest,
};
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

use crate::helpers::{Chunk, Stack, WAIT, eventually, review_schema};

const SINK: &str = "postgres-sink";
const SOURCE: &str = "sftp-csv-source";

/// One HTTP exchange: the status and the JSON body (Null when there is none).
async fn call(stack: &Stack, method: Method, path: &str, body: Option<Json>) -> (StatusCode, Json) {
    let mut request = reqwest::Client::new().request(method.clone(), stack.rest_url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = if text.is_empty() {
        Json::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    };
    (status, json)
}

async fn get(stack: &Stack, path: &str) -> (StatusCode, Json) {
    call(stack, Method::GET, path, None).await
}

/// Kafka Connect's error shape, with the code it came with.
fn assert_error(code: StatusCode, body: &Json, want: u16, mentions: &str) {
    assert_eq!(code.as_u16(), want, "{body}");
    assert_eq!(body["error_code"], want, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(mentions)),
        "{mentions:?} not in {body}"
    );
}

/// A connector of `deploy/connectors/` as the POST body.
fn body(stack: &Stack, file: &str, overrides: &[(&str, &str)]) -> (String, Json) {
    let (name, config) = stack.connector(file, overrides);
    (name.clone(), json!({"name": name, "config": config}))
}

async fn create(stack: &Stack, file: &str, overrides: &[(&str, &str)]) -> String {
    let (name, body) = body(stack, file, overrides);
    let (code, info) = call(stack, Method::POST, "/connectors", Some(body)).await;
    assert_eq!(code, StatusCode::CREATED, "{info}");
    name
}

async fn status(stack: &Stack, name: &str) -> Json {
    let (code, s) = get(stack, &format!("/connectors/{name}/status")).await;
    assert_eq!(code, StatusCode::OK, "{s}");
    s
}

/// Waits until the connector and every task are in `state`.
async fn wait_for_state(stack: &Stack, name: &str, state: &str) -> Json {
    eventually(&format!("{name} {state}"), WAIT, || async {
        let s = status(stack, name).await;
        let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
        (s["connector"]["state"] == state && tasks.iter().all(|t| t["state"] == state)).then_some(s)
    })
    .await
}

/// Produces rows `from..=to` of file `file` to partition 0 of the stack's topic.
async fn produce(stack: &Stack, file: &str, from: u64, to: u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let encoder = Encoder::new(&review_schema());
    for row in from..=to {
        let key = format!("{file}:{row}");
        let row_text = row.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "etl.file",
                value: Some(file),
            })
            .insert(Header {
                key: "etl.row",
                value: Some(row_text.as_str()),
            });
        let payload = encoder.encode(&[Value::Text(format!("row {row}"))]);
        producer
            .send(
                FutureRecord::to(&stack.topic)
                    .partition(0)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }
}

async fn create_topic(stack: &Stack, partitions: i32) {
    let broker = tokio::task::spawn_blocking(testkit::shared_broker)
        .await
        .expect("join")
        .expect("broker");
    broker
        .create_topic(&stack.topic, partitions)
        .await
        .expect("topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_reports_version_commit_and_the_kafka_cluster_id() {
    let stack = Stack::start().await;
    let (code, root) = get(&stack, "/").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"), "{root}");
    let commit = root["commit"].as_str().expect("commit");
    assert!(!commit.is_empty() && commit != "file-etl", "{root}");
    let cluster = root["kafka_cluster_id"].as_str().expect("cluster id");
    assert!(cluster.len() >= 16, "a real Kafka cluster id: {root}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_list_and_describe_their_options() {
    let stack = Stack::start().await;
    let (code, plugins) = get(&stack, "/connector-plugins").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(plugins.as_array().map(Vec::len), Some(2), "{plugins}");
    let (_, all) = get(&stack, "/connector-plugins?connectorsOnly=false").await;
    assert!(
        all.as_array()
            .is_some_and(|a| a.iter().any(|p| p["type"] == "converter")),
        "{all}"
    );

    let (code, defs) = get(
        &stack,
        "/connector-plugins/io.confluent.connect.jdbc.JdbcSinkConnector/config",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let url = defs
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "connection.url"))
        .expect("connection.url defined");
    assert_eq!(url["required"], true, "{url}");
    assert_eq!(url["type"], "STRING");
    let transforms = defs
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "transforms"))
        .expect("transforms defined");
    assert!(
        transforms["documentation"]
            .as_str()
            .is_some_and(|d| d.contains("Not supported")),
        "{transforms}"
    );

    let (code, err) = get(&stack, "/connector-plugins/FileStreamSource/config").await;
    assert_error(code, &err, 404, "FileStreamSource");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_unknown_and_unsupported_keys() {
    let stack = Stack::start().await;
    let (_, mut config) = stack.connector("postgres-sink.json", &[]);
    let path = "/connector-plugins/JdbcSinkConnector/config/validate";

    let (code, ok) = call(&stack, Method::PUT, path, Some(json!(config))).await;
    assert_eq!(code, StatusCode::OK, "{ok}");
    assert_eq!(ok["error_count"], 0, "{ok}");
    assert_eq!(ok["name"], "io.confluent.connect.jdbc.JdbcSinkConnector");
    let configs = ok["configs"].as_array().expect("configs");
    let password = configs
        .iter()
        .find(|c| c["definition"]["name"] == "connection.password")
        .expect("password entry");
    assert_eq!(password["definition"]["type"], "PASSWORD");

    config.insert("insert.mdoe".into(), "upsert".into());
    config.insert("errors.log.include.messages".into(), "true".into());
    config.insert("transforms".into(), "unwrap".into());
    config.insert("connection.password".into(), "secret".into());
    let (code, found) = call(&stack, Method::PUT, path, Some(json!(config))).await;
    assert_eq!(code, StatusCode::OK, "{found}");
    assert_eq!(found["error_count"], 3, "{found}");
    assert!(
        errors_of_in(&found, "insert.mdoe")[0].contains("not an option of the sink"),
        "{found}"
    );
    assert!(
        errors_of_in(&found, "errors.log.include.messages")[0].contains("never written to the log"),
        "{found}"
    );
    assert!(
        errors_of_in(&found, "transforms")[0].contains("transforms"),
        "{found}"
    );
    assert!(
        found["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "Unknown")),
        "{found}"
    );
    let shown = found["configs"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["value"]["name"] == "connection.password")
        })
        .map(|c| c["value"]["value"].clone());
    assert_eq!(shown, Some(json!("[hidden]")));

    // A parse error lands on the option it names.
    config.insert("insert.mode".into(), "merge".into());
    let (_, found) = call(&stack, Method::PUT, path, Some(json!(config))).await;
    assert!(
        errors_of_in(&found, "insert.mode")[0].contains("insert.mode"),
        "{found}"
    );

    // The config's class must be the path's.
    let (code, err) = call(
        &stack,
        Method::PUT,
        "/connector-plugins/SftpCsvSourceConnector/config/validate",
        Some(json!(config)),
    )
    .await;
    assert_error(code, &err, 400, "does not match");
}

fn errors_of_in(found: &Json, key: &str) -> Vec<String> {
    found["configs"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["value"]["name"] == key))
        .map(|c| {
            c["value"]["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_options_it_would_ignore_and_accepts_unknown_keys() {
    let stack = Stack::start().await;
    let (_, refused) = body(
        &stack,
        "sftp-source.json",
        &[
            ("transforms", "mask"),
            ("value.converter", "io.confluent.connect.avro.AvroConverter"),
        ],
    );
    let (code, err) = call(&stack, Method::POST, "/connectors", Some(refused)).await;
    assert_error(code, &err, 400, "\"transforms\"=\"mask\" is not supported");
    assert_error(code, &err, 400, "AvroConverter\" is not supported");
    let (_, refused) = body(
        &stack,
        "postgres-sink.json",
        &[(
            "connection.url",
            "jdbc:postgresql://127.0.0.1:5432/x?sslmode=require",
        )],
    );
    let (code, err) = call(&stack, Method::POST, "/connectors", Some(refused)).await;
    assert_error(code, &err, 400, "without TLS");
    let (code, list) = get(&stack, "/connectors").await;
    assert_eq!((code, list), (StatusCode::OK, json!([])));

    // The original project's source shape: tab separator, MOVE, LOG on error, and a
    // key this service does not know (warned, not refused).
    let (_, accepted) = body(
        &stack,
        "sftp-source.json",
        &[
            ("csv.separator.char", "9"),
            ("cleanup.policy", "MOVE"),
            ("behavior.on.error", "LOG"),
            ("some.unknown.key", "x"),
        ],
    );
    let (code, info) = call(&stack, Method::POST, "/connectors", Some(accepted)).await;
    assert_eq!(code, StatusCode::CREATED, "{info}");
    assert_eq!(info["type"], "source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tasks_and_expand_tell_the_truth_about_two_sink_tasks() {
    let stack = Stack::start().await;
    create_topic(&stack, 2).await;
    let name = create(&stack, "postgres-sink.json", &[("tasks.max", "2")]).await;
    let worker = stack.manager().rest_addr.to_string();
    let s = wait_for_state(&stack, &name, "RUNNING").await;
    assert_eq!(s["type"], "sink");
    assert_eq!(s["connector"]["worker_id"], worker, "{s}");
    assert_eq!(s["tasks"].as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(s["tasks"][1]["id"], 1);
    assert_eq!(s["tasks"][1]["worker_id"], worker);
    assert!(s["connector"].get("trace").is_none(), "{s}");
    assert!(s["metrics"]["tasks"][1]["records"].is_u64(), "{s}");

    // Both tasks share the partitions: every row lands once.
    produce(&stack, "two.csv", 1, 30).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 30).await;
    eventually("records counted", WAIT, || async {
        (status(&stack, &name).await["metrics"]["records"] == 30).then_some(())
    })
    .await;

    let (code, info) = get(&stack, &format!("/connectors/{name}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        info["tasks"],
        json!([{"connector": name, "task": 0}, {"connector": name, "task": 1}])
    );
    let (code, tasks) = get(&stack, &format!("/connectors/{name}/tasks")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(tasks[1]["id"], json!({"connector": name, "task": 1}));
    assert_eq!(tasks[1]["config"]["tasks.max"], "2");
    let (code, configs) = get(&stack, &format!("/connectors/{name}/tasks-config")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(configs.get(format!("{name}-1")).is_some(), "{configs}");

    let (code, task) = get(&stack, &format!("/connectors/{name}/tasks/1/status")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        task,
        json!({"id": 1, "state": "RUNNING", "worker_id": worker})
    );
    let (code, err) = get(&stack, &format!("/connectors/{name}/tasks/2/status")).await;
    assert_error(code, &err, 404, "task 2");
    let (code, err) = get(&stack, &format!("/connectors/{name}/tasks/x/status")).await;
    assert_error(code, &err, 404, "task x");

    let (code, expanded) = get(&stack, "/connectors?expand=status&expand=info").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(expanded[&name]["status"]["connector"]["state"], "RUNNING");
    assert_eq!(expanded[&name]["info"]["type"], "sink");
    let (_, only_info) = get(&stack, "/connectors?expand=info").await;
    assert!(only_info[&name].get("status").is_none(), "{only_info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_postgres_refuses_goes_failed_with_its_trace_and_recovers() {
    let stack = Stack::start().await;
    create_topic(&stack, 1).await;
    let pg = stack.pg().await;
    let role = testkit::unique_name("nowrite").replace('-', "_");
    pg.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
    ))
    .await
    .expect("role without rights");
    produce(&stack, "refused.csv", 1, 5).await;
    let name = create(&stack, "postgres-sink.json", &[("connection.user", &role)]).await;

    let s = wait_for_state(&stack, &name, "FAILED").await;
    let trace = s["connector"]["trace"].as_str().expect("connector trace");
    assert!(trace.contains("permission denied"), "{s}");
    assert!(trace.contains("review"), "names the table: {s}");
    assert!(
        s["tasks"][0]["trace"]
            .as_str()
            .is_some_and(|t| t.contains("permission denied")),
        "{s}"
    );
    let (_, task) = get(&stack, &format!("/connectors/{name}/tasks/0/status")).await;
    assert_eq!(task["state"], "FAILED", "{task}");
    assert!(task["trace"].is_string(), "{task}");

    // Restart only what failed: 202, and the answer says RESTARTING.
    pg.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {role};"))
        .await
        .expect("grant");
    let (code, plan) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/restart?includeTasks=true&onlyFailed=true"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{plan}");
    assert_eq!(plan["connector"]["state"], "RESTARTING", "{plan}");
    assert_eq!(plan["tasks"][0]["state"], "RESTARTING", "{plan}");
    stack.wait_for_rows(&pg, 5).await;
    wait_for_state(&stack, &name, "RUNNING").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_stop_and_restart_really_stop_and_start_the_tasks() {
    let mut stack = Stack::start().await;
    create_topic(&stack, 1).await;
    let name = create(&stack, "postgres-sink.json", &[]).await;
    wait_for_state(&stack, &name, "RUNNING").await;
    let pg = stack.pg().await;
    produce(&stack, "a.csv", 1, 3).await;
    stack.wait_for_rows(&pg, 3).await;

    let (code, body) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/pause"),
        None,
    )
    .await;
    assert_eq!((code, body), (StatusCode::ACCEPTED, Json::Null));
    let s = wait_for_state(&stack, &name, "PAUSED").await;
    assert_eq!(s["tasks"].as_array().map(Vec::len), Some(1), "{s}");
    // Paused means nothing is written...
    produce(&stack, "a.csv", 4, 6).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.count(&pg).await, 3, "a paused sink writes nothing");
    // ...and it stays paused across a restart of the service.
    stack.restart_manager().await;
    wait_for_state(&stack, &name, "PAUSED").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.count(&pg).await, 3);

    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/resume"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    stack.wait_for_rows(&pg, 6).await;
    wait_for_state(&stack, &name, "RUNNING").await;

    let (code, body) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/stop"),
        None,
    )
    .await;
    assert_eq!((code, body), (StatusCode::NO_CONTENT, Json::Null));
    let s = status(&stack, &name).await;
    assert_eq!(s["connector"]["state"], "STOPPED", "{s}");
    assert_eq!(s["tasks"], json!([]), "a stopped connector has no tasks");
    let (_, tasks) = get(&stack, &format!("/connectors/{name}/tasks")).await;
    assert_eq!(tasks, json!([]));
    let (code, err) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/tasks/0/restart"),
        None,
    )
    .await;
    assert_error(code, &err, 404, "task 0");
    // Idempotent.
    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/stop"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/resume"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    wait_for_state(&stack, &name, "RUNNING").await;

    // Restart: the plain form answers 204, with includeTasks 202 and the plan.
    let (code, body) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/restart"),
        None,
    )
    .await;
    assert_eq!((code, body), (StatusCode::NO_CONTENT, Json::Null));
    let (code, plan) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/restart?includeTasks=true"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(plan["connector"]["state"], "RESTARTING", "{plan}");
    assert_eq!(plan["tasks"][0]["state"], "RESTARTING", "{plan}");
    wait_for_state(&stack, &name, "RUNNING").await;
    // Nothing failed: onlyFailed restarts nothing.
    let (code, plan) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/restart?includeTasks=true&onlyFailed=true"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(plan["connector"]["state"], "RUNNING", "{plan}");
    assert_eq!(plan["tasks"][0]["state"], "RUNNING", "{plan}");
    let (code, body) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/tasks/0/restart"),
        None,
    )
    .await;
    assert_eq!((code, body), (StatusCode::NO_CONTENT, Json::Null));
    let (code, err) = call(
        &stack,
        Method::POST,
        &format!("/connectors/{name}/restart?includeTasks=maybe"),
        None,
    )
    .await;
    assert_error(code, &err, 400, "includeTasks");
    produce(&stack, "a.csv", 7, 8).await;
    stack.wait_for_rows(&pg, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_created_stopped_or_paused_starts_so() {
    let stack = Stack::start().await;
    let (name, mut body) = body(&stack, "postgres-sink.json", &[]);
    body["initial_state"] = json!("STOPPED");
    let (code, info) = call(&stack, Method::POST, "/connectors", Some(body.clone())).await;
    assert_eq!(code, StatusCode::CREATED, "{info}");
    assert_eq!(info["tasks"], json!([]));
    assert_eq!(status(&stack, &name).await["connector"]["state"], "STOPPED");
    let (code, err) = call(&stack, Method::POST, "/connectors", Some(body.clone())).await;
    assert_error(code, &err, 409, "already exists");

    body["name"] = json!("other");
    body["initial_state"] = json!("SLEEPING");
    let (code, err) = call(&stack, Method::POST, "/connectors", Some(body.clone())).await;
    assert_error(code, &err, 400, "initial_state");
    body["initial_state"] = json!("PAUSED");
    body["config"]["consumer.override.group.id"] = json!(format!("connect-{}-other", stack.topic));
    let (code, _) = call(&stack, Method::POST, "/connectors", Some(body)).await;
    assert_eq!(code, StatusCode::CREATED);
    let s = wait_for_state(&stack, "other", "PAUSED").await;
    assert_eq!(s["tasks"].as_array().map(Vec::len), Some(1), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_config_and_topics() {
    let stack = Stack::start().await;
    let name = create(&stack, "postgres-sink.json", &[]).await;
    let (code, info) = call(
        &stack,
        Method::PATCH,
        &format!("/connectors/{name}/config"),
        Some(json!({"batch.size": 100, "auto.evolve": null})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{info}");
    assert_eq!(info["config"]["batch.size"], "100");
    assert!(info["config"].get("auto.evolve").is_none(), "{info}");
    let (_, config) = get(&stack, &format!("/connectors/{name}/config")).await;
    assert_eq!(config["batch.size"], "100");
    let (code, err) = call(
        &stack,
        Method::PATCH,
        &format!("/connectors/{name}/config"),
        Some(json!({"transforms": "t"})),
    )
    .await;
    assert_error(code, &err, 400, "transforms");
    let (code, err) = call(
        &stack,
        Method::PATCH,
        "/connectors/nope/config",
        Some(json!({"batch.size": 1})),
    )
    .await;
    assert_error(code, &err, 404, "nope");

    wait_for_state(&stack, &name, "RUNNING").await;
    let (code, topics) = get(&stack, &format!("/connectors/{name}/topics")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(topics, json!({ name.clone(): {"topics": [stack.topic]} }));
    let (code, body) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/topics/reset"),
        None,
    )
    .await;
    assert_eq!((code, body), (StatusCode::ACCEPTED, Json::Null));
    let (_, topics) = get(&stack, &format!("/connectors/{name}/topics")).await;
    assert_eq!(topics, json!({ name.clone(): {"topics": []} }));
    // Topics come back once records move through the connector again.
    produce(&stack, "t.csv", 1, 2).await;
    eventually("active topics again", WAIT, || async {
        let (_, topics) = get(&stack, &format!("/connectors/{name}/topics")).await;
        (topics[&name]["topics"] == json!([stack.topic])).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_offsets_change_only_when_stopped() {
    let stack = Stack::start().await;
    create_topic(&stack, 1).await;
    produce(&stack, "o.csv", 1, 10).await;
    let name = create(&stack, "postgres-sink.json", &[]).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 10).await;
    let partition = json!({"kafka_topic": stack.topic, "kafka_partition": 0});
    let offsets = eventually("committed offsets", WAIT, || async {
        let (code, o) = get(&stack, &format!("/connectors/{name}/offsets")).await;
        assert_eq!(code, StatusCode::OK, "{o}");
        (o["offsets"][0]["offset"]["kafka_offset"] == 10).then_some(o)
    })
    .await;
    assert_eq!(offsets["offsets"][0]["partition"], partition);

    let path = format!("/connectors/{name}/offsets");
    let alter = json!({"offsets": [{"partition": partition, "offset": {"kafka_offset": 4}}]});
    let (code, err) = call(&stack, Method::PATCH, &path, Some(alter.clone())).await;
    assert_error(code, &err, 400, "STOPPED");
    let (code, err) = call(&stack, Method::DELETE, &path, None).await;
    assert_error(code, &err, 400, "STOPPED");

    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/stop"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (code, err) = call(&stack, Method::PATCH, &path, Some(json!({"offsets": []}))).await;
    assert_error(code, &err, 400, "need to be provided");
    let (code, err) = call(
        &stack,
        Method::PATCH,
        &path,
        Some(json!({"offsets": [{"partition": {"kafka_topic": "t"}, "offset": null}]})),
    )
    .await;
    assert_error(code, &err, 400, "kafka_partition");
    let (code, done) = call(&stack, Method::PATCH, &path, Some(alter)).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    assert_eq!(
        done["message"],
        "The offsets for this connector have been altered successfully"
    );
    let (_, o) = get(&stack, &path).await;
    assert_eq!(o["offsets"][0]["offset"]["kafka_offset"], 4, "{o}");

    let (code, done) = call(&stack, Method::DELETE, &path, None).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    assert_eq!(
        done["message"],
        "The offsets for this connector have been reset successfully"
    );
    let (_, o) = get(&stack, &path).await;
    assert_eq!(o, json!({"offsets": []}));

    // Resumed, the sink reads the topic again from the start: the rows do not change,
    // and the group commits up to the end again.
    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/resume"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    eventually("offsets committed again", WAIT, || async {
        let (_, o) = get(&stack, &path).await;
        (o["offsets"][0]["offset"]["kafka_offset"] == 10).then_some(())
    })
    .await;
    assert_eq!(stack.count(&pg).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_offsets_are_the_files_it_sent() {
    let stack = Stack::start().await;
    let name = create(
        &stack,
        "sftp-source.json",
        &[("cleanup.policy", "NONE"), ("file.poll.interval.ms", "200")],
    )
    .await;
    stack.upload("kept.tsv", &Chunk::tricky(3, "k").tsv()).await;
    eventually("file sent", WAIT, || async {
        (status(&stack, &name).await["metrics"]["files_finished"] == 1).then_some(())
    })
    .await;
    let path = format!("/connectors/{name}/offsets");
    let (code, o) = get(&stack, &path).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        o["offsets"][0]["partition"],
        json!({"file": "kept.tsv"}),
        "{o}"
    );
    assert!(
        o["offsets"][0]["offset"]["size"]
            .as_u64()
            .is_some_and(|s| s > 0),
        "{o}"
    );

    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/stop"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let other = json!({"offsets": [{"partition": {"file": "other.tsv"}, "offset": {"size": 1, "mtime": 2}}]});
    let (code, done) = call(&stack, Method::PATCH, &path, Some(other)).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    let (_, o) = get(&stack, &path).await;
    assert_eq!(o["offsets"].as_array().map(Vec::len), Some(2), "{o}");
    let forget = json!({"offsets": [{"partition": {"file": "other.tsv"}, "offset": null}]});
    let (code, _) = call(&stack, Method::PATCH, &path, Some(forget)).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(&stack, Method::DELETE, &path, None).await;
    assert_eq!(code, StatusCode::OK);
    let (_, o) = get(&stack, &path).await;
    assert_eq!(o, json!({"offsets": []}));

    // With its offsets reset the source sends the file again.
    let (code, _) = call(
        &stack,
        Method::PUT,
        &format!("/connectors/{name}/resume"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    eventually("file sent again", WAIT, || async {
        let (_, o) = get(&stack, &path).await;
        (o["offsets"][0]["partition"]["file"] == "kept.tsv").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loggers_show_the_levels_and_refuse_changes() {
    let stack = Stack::start().await;
    let (code, all) = get(&stack, "/admin/loggers").await;
    assert_eq!(code, StatusCode::OK);
    assert!(all["root"]["level"].is_string(), "{all}");
    let (code, one) = get(&stack, "/admin/loggers/connect_manager").await;
    assert_eq!(code, StatusCode::OK);
    assert!(one["level"].is_string(), "{one}");
    let (code, err) = call(
        &stack,
        Method::PUT,
        "/admin/loggers/connect_manager",
        Some(json!({"level": "DEBUG"})),
    )
    .await;
    assert_error(code, &err, 501, "RUST_LOG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connector_is_404_everywhere() {
    let stack = Stack::start().await;
    let n = "/connectors/nope";
    for (method, path) in [
        (Method::GET, n.to_string()),
        (Method::DELETE, n.to_string()),
        (Method::GET, format!("{n}/config")),
        (Method::GET, format!("{n}/status")),
        (Method::PUT, format!("{n}/pause")),
        (Method::PUT, format!("{n}/resume")),
        (Method::PUT, format!("{n}/stop")),
        (Method::POST, format!("{n}/restart")),
        (Method::GET, format!("{n}/tasks")),
        (Method::GET, format!("{n}/tasks/0/status")),
        (Method::POST, format!("{n}/tasks/0/restart")),
        (Method::GET, format!("{n}/topics")),
        (Method::PUT, format!("{n}/topics/reset")),
        (Method::GET, format!("{n}/offsets")),
        (Method::DELETE, format!("{n}/offsets")),
    ] {
        let (code, err) = call(&stack, method.clone(), &path, None).await;
        assert_error(code, &err, 404, "nope");
    }
    let (code, err) = get(&stack, "/no/such/path").await;
    assert_error(code, &err, 404, "Not Found");
    let (code, err) = call(&stack, Method::DELETE, "/connectors", None).await;
    assert_error(code, &err, 405, "Method Not Allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_offers_the_same_operations() {
    let stack = Stack::start().await;
    create_topic(&stack, 1).await;
    stack.create_connectors().await;
    let mut grpc = stack.grpc().await;
    eventually("sink RUNNING", WAIT, || async {
        (stack.status(SINK).await.state == "RUNNING").then_some(())
    })
    .await;
    let paused = grpc
        .pause_connector(PauseConnectorRequest { name: SINK.into() })
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(paused.state, "PAUSED");
    assert_eq!(paused.tasks[0].state, "PAUSED");
    let resumed = grpc
        .resume_connector(ResumeConnectorRequest { name: SINK.into() })
        .await
        .expect("resume")
        .into_inner();
    assert_ne!(resumed.state, "PAUSED");
    let plan = grpc
        .restart_connector(RestartConnectorRequest {
            name: SOURCE.into(),
            include_tasks: true,
            only_failed: false,
        })
        .await
        .expect("restart")
        .into_inner();
    assert_eq!(plan.state, "RESTARTING");

    let err = grpc
        .alter_connector_offsets(AlterConnectorOffsetsRequest {
            name: SINK.into(),
            offsets: vec![ConnectorOffset {
                partition_json: json!({"kafka_topic": stack.topic, "kafka_partition": 0})
                    .to_string(),
                offset_json: "null".into(),
            }],
        })
        .await
        .expect_err("not stopped");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let stopped = grpc
        .stop_connector(StopConnectorRequest { name: SINK.into() })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(
        (stopped.state.as_str(), stopped.tasks.len()),
        ("STOPPED", 0)
    );
    let offsets = grpc
        .get_connector_offsets(GetConnectorOffsetsRequest { name: SINK.into() })
        .await
        .expect("offsets")
        .into_inner();
    assert!(
        offsets.offsets.is_empty(),
        "nothing consumed yet: {offsets:?}"
    );

    let mut config: HashMap<String, String> = stack.connector("postgres-sink.json", &[]).1;
    config.insert(
        "header.converter".into(),
        "org.apache.kafka.connect.converters.ByteArrayConverter".into(),
    );
    let validation = grpc
        .validate_connector_config(ValidateConnectorConfigRequest { config })
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(validation.error_count, 1, "{validation:?}");
    assert_eq!(validation.findings[0].key, "header.converter");
    assert_eq!(validation.findings[0].verdict, "UNSUPPORTED");
}
