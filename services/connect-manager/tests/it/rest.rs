//! The Kafka-Connect-compatible REST API, and the gRPC API's errors.

use std::collections::HashMap;

use etl_proto::v1::{CreateConnectorRequest, DeleteConnectorRequest, GetConnectorStatusRequest};
use serde_json::{Value, json};

use crate::helpers::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_round_trip() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let (name, config) = stack.connector("postgres-sink.json", &[]);

    let root: Value = http
        .get(stack.rest_url("/"))
        .send()
        .await
        .expect("GET /")
        .json()
        .await
        .expect("json");
    assert!(root["version"].is_string(), "{root}");
    let plugins: Value = http
        .get(stack.rest_url("/connector-plugins"))
        .send()
        .await
        .expect("GET plugins")
        .json()
        .await
        .expect("json");
    assert_eq!(
        plugins[1]["class"], "io.confluent.connect.jdbc.JdbcSinkConnector",
        "{plugins}"
    );

    let created = http
        .post(stack.rest_url("/connectors"))
        .json(&json!({"name": name, "config": config}))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.expect("json");
    assert_eq!(body["name"], name);
    assert_eq!(body["type"], "sink");
    assert_eq!(body["config"]["table.name.format"], "review");

    let again = http
        .post(stack.rest_url("/connectors"))
        .json(&json!({"name": name, "config": config}))
        .send()
        .await
        .expect("POST again");
    assert_eq!(again.status(), 409);
    let err: Value = again.json().await.expect("json");
    assert_eq!(err["error_code"], 409);
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("already exists")),
        "{err}"
    );

    let list: Vec<String> = http
        .get(stack.rest_url("/connectors"))
        .send()
        .await
        .expect("GET list")
        .json()
        .await
        .expect("json");
    assert_eq!(list, vec![name.clone()]);

    let got: HashMap<String, String> = http
        .get(stack.rest_url(&format!("/connectors/{name}/config")))
        .send()
        .await
        .expect("GET config")
        .json()
        .await
        .expect("json");
    assert_eq!(got, config);

    let status: Value = http
        .get(stack.rest_url(&format!("/connectors/{name}/status")))
        .send()
        .await
        .expect("GET status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["name"], name);
    assert_eq!(status["type"], "sink");
    assert!(status["connector"]["state"].is_string(), "{status}");
    assert_eq!(status["tasks"][0]["id"], 0);
    assert!(
        ["RUNNING", "UNASSIGNED", "FAILED"]
            .contains(&status["tasks"][0]["state"].as_str().unwrap_or("")),
        "{status}"
    );

    // PUT replaces the config (200), with numbers accepted as text.
    let mut changed: serde_json::Map<String, Value> = config
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    changed.insert("batch.size".into(), json!(500));
    let put = http
        .put(stack.rest_url(&format!("/connectors/{name}/config")))
        .json(&changed)
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 200);
    let info: Value = http
        .get(stack.rest_url(&format!("/connectors/{name}")))
        .send()
        .await
        .expect("GET info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["config"]["batch.size"], "500");
    assert_eq!(info["tasks"][0]["connector"], name);

    let bad = http
        .post(stack.rest_url("/connectors"))
        .json(&json!({"name": "x", "config": {"connector.class": "Nope"}}))
        .send()
        .await
        .expect("POST bad");
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.expect("json");
    assert_eq!(err["error_code"], 400);
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown connector.class")),
        "{err}"
    );

    let not_json = http
        .post(stack.rest_url("/connectors"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("POST not json");
    assert_eq!(not_json.status(), 400);

    let deleted = http
        .delete(stack.rest_url(&format!("/connectors/{name}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    let gone = http
        .get(stack.rest_url(&format!("/connectors/{name}")))
        .send()
        .await
        .expect("GET gone");
    assert_eq!(gone.status(), 404);
    let err: Value = gone.json().await.expect("json");
    assert_eq!(err["error_code"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rejects_bad_configs_and_unknown_names() {
    let stack = Stack::start().await;
    let mut grpc = stack.grpc().await;
    let (name, mut config) = stack.connector("sftp-source.json", &[]);
    config.insert("tasks.max".into(), "many".into());
    let err = grpc
        .create_connector(CreateConnectorRequest {
            name: name.clone(),
            config,
        })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("\"tasks.max\""), "{}", err.message());

    let (_, mut config) = stack.connector("postgres-sink.json", &[]);
    config.remove("topics");
    let err = grpc
        .create_connector(CreateConnectorRequest {
            name: "s".into(),
            config,
        })
        .await
        .expect_err("missing topics");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("\"topics\" is missing"),
        "{}",
        err.message()
    );

    let err = grpc
        .get_connector_status(GetConnectorStatusRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = grpc
        .delete_connector(DeleteConnectorRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
}
