//! The control plane's token and the connectors' secrets, through the real
//! servers (connect-manager in-process on port 0; no broker is needed for what
//! is checked here):
//! - REST and gRPC refuse a call without the token (401 in Kafka Connect's
//!   shape, UNAUTHENTICATED) and serve it with the token; health stays open;
//! - no response holds a password: every response of every endpoint that shows
//!   a config, a status, a validation or an error is captured and searched for
//!   the test's passwords;
//! - `${env:…}` and `${file:…}` references resolve when the connector starts,
//!   while the API and the store keep the reference.

use std::{collections::HashMap, time::Duration};

use connect_manager::Config;
use etl_proto::v1::{
    CreateConnectorRequest, GetConnectorStatusRequest, ListConnectorsRequest,
    ValidateConnectorConfigRequest, connect_manager_client::ConnectManagerClient,
};
use etl_service::{ApiSecurity, ClientAuth, Shutdown, auth::Token};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use tonic::Code;

const TOKEN: &str = "connect-test-token-7f3a";
/// Passwords that must never come back.
const PW_FIELD: &str = "pw-field-Zq81";
const PW_URL: &str = "pw-url-Xk27";
const PW_SFTP: &str = "pw-sftp-Mv55";
const PW_BAD_URL: &str = "pw-bad-Rr09";
const PW_FILE: &str = "pw-file-Tt64";

struct Manager {
    running: Option<connect_manager::Running>,
    shutdown: Shutdown,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// Every response body seen, to search for secrets at the end.
    seen: Vec<String>,
}

impl Manager {
    async fn start() -> Self {
        etl_telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("tempdir");
        // No broker: the APIs and the connectors' configs need none.
        let mut config = Config::ephemeral("127.0.0.1:9", dir.path().join("connect"));
        config.security = ApiSecurity::with_token(TOKEN);
        let shutdown = Shutdown::new();
        let running = connect_manager::start(config, shutdown.clone())
            .await
            .expect("connect-manager starts");
        Self {
            running: Some(running),
            shutdown,
            dir,
            http: reqwest::Client::new(),
            seen: Vec::new(),
        }
    }

    fn running(&self) -> &connect_manager::Running {
        self.running.as_ref().expect("running")
    }

    async fn rest(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Json>,
        token: Option<&str>,
    ) -> (StatusCode, Json) {
        let url = format!("http://{}{path}", self.running().rest_addr);
        let mut request = self.http.request(method, url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("HTTP");
        let status = response.status();
        let text = response.text().await.expect("body");
        self.seen.push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Json::Null);
        (status, json)
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<Json>) -> (StatusCode, Json) {
        self.rest(method, path, body, Some(TOKEN)).await
    }

    async fn grpc(&self, auth: &ClientAuth) -> ConnectManagerClient<etl_service::AuthChannel> {
        let url = format!("http://{}", self.running().grpc_addr);
        ConnectManagerClient::new(auth.connect(&url).await.expect("gRPC connects"))
    }

    fn store(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("connect/connectors.json")).expect("the store")
    }

    /// Stops it without waiting for tasks that wait for servers that are not
    /// there (how tasks stop is tested elsewhere).
    fn stop(mut self) {
        self.shutdown.trigger();
        drop(self.running.take());
    }
}

fn authed() -> ClientAuth {
    ClientAuth::token(Token::new(TOKEN, "test").expect("token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_need_the_token_and_health_does_not() {
    let mut m = Manager::start().await;
    let (code, body) = m.rest(Method::GET, "/connectors", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error_code"], 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|s| s.contains("token")),
        "{body}"
    );
    let (code, _) = m
        .rest(Method::GET, "/connectors", None, Some("not-the-token"))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // Every path, even the root and unknown ones, and writes.
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/connector-plugins"),
        (Method::DELETE, "/connectors/x"),
        (Method::POST, "/connectors"),
        (Method::GET, "/nope"),
    ] {
        let (code, _) = m.rest(method.clone(), path, None, None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (code, body) = m.call(Method::GET, "/connectors", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body, json!([]));

    let refused = m
        .grpc(&ClientAuth::none())
        .await
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    m.grpc(&authed())
        .await
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("with the token");

    // Health answers without a token (NOT_SERVING here: no broker).
    let health = etl_service::probe_health(&m.running().grpc_addr.to_string()).await;
    assert!(health.is_ok(), "{health:?}");
    m.stop();
}

fn sink(extra: &[(&str, &str)]) -> Json {
    let mut config = serde_json::Map::new();
    for (k, v) in [
        ("connector.class", "JdbcSinkConnector"),
        ("topics", "review-etl"),
        (
            "connection.url",
            &format!("jdbc:postgresql://127.0.0.1:1/nlp_db?user=etl&password={PW_URL}") as &str,
        ),
        ("connection.password", PW_FIELD),
    ] {
        config.insert(k.into(), json!(v));
    }
    for (k, v) in extra {
        config.insert(k.to_string(), json!(v));
    }
    Json::Object(config)
}

fn source() -> Json {
    json!({
        "connector.class": "SftpCsvSourceConnector",
        "kafka.topic": "review-etl",
        "sftp.host": "127.0.0.1",
        "sftp.port": "1",
        "sftp.username": "etl",
        "sftp.password": PW_SFTP,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_holds_a_password() {
    let mut m = Manager::start().await;
    let (code, body) = m
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "sink", "config": sink(&[])})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["config"]["connection.password"], "[hidden]", "{body}");
    assert_eq!(
        body["config"]["connection.url"],
        "jdbc:postgresql://127.0.0.1:1/nlp_db?user=etl&password=[hidden]",
        "{body}"
    );
    let (code, body) = m
        .call(Method::PUT, "/connectors/source/config", Some(source()))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["config"]["sftp.password"], "[hidden]", "{body}");

    // Let the tasks fail against the missing servers, so statuses hold errors.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for path in [
        "/connectors?expand=info&expand=status",
        "/connectors/sink",
        "/connectors/sink/config",
        "/connectors/sink/status",
        "/connectors/sink/tasks",
        "/connectors/sink/tasks-config",
        "/connectors/sink/tasks/0/status",
        "/connectors/source/config",
        "/connectors/source/status",
    ] {
        let (code, _) = m.call(Method::GET, path, None).await;
        assert_eq!(code, StatusCode::OK, "{path}");
    }
    // PATCH keeps the stored password (not the shown `[hidden]`). On a
    // STOPPED connector: no task to wait for.
    let (code, body) = m
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "stopped", "config": sink(&[]), "initial_state": "STOPPED"})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = m
        .call(
            Method::PATCH,
            "/connectors/stopped/config",
            Some(json!({"batch.size": "100"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["config"]["batch.size"], "100", "{body}");
    let store = m.store();
    assert_eq!(
        store.matches(PW_FIELD).count(),
        2,
        "the store keeps the real config of both sinks"
    );
    assert!(!store.contains("[hidden]"), "{store}");

    // validate, and create with a connection.url that does not parse.
    let bad_url = format!("postgres://etl:{PW_BAD_URL}%zz@db/x");
    let (code, body) = m
        .call(
            Method::PUT,
            "/connector-plugins/JdbcSinkConnector/config/validate",
            Some(sink(&[
                ("connection.url", &bad_url),
                ("tls.passphrase", "pp-Qw12"),
            ])),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["error_count"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );
    let (code, body) = m
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "bad", "config": sink(&[("connection.url", &bad_url)])})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|s| s.contains("connection.url")),
        "{body}"
    );

    // The same over gRPC.
    let mut grpc = m.grpc(&authed()).await;
    let mut seen_grpc = Vec::new();
    let list = grpc
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("list");
    seen_grpc.push(format!("{list:?}"));
    for name in ["sink", "source"] {
        let status = grpc
            .get_connector_status(GetConnectorStatusRequest { name: name.into() })
            .await
            .expect("status");
        seen_grpc.push(format!("{status:?}"));
    }
    let config: HashMap<String, String> =
        serde_json::from_value::<HashMap<String, String>>(sink(&[("connection.url", &bad_url)]))
            .expect("strings");
    let validation = grpc
        .validate_connector_config(ValidateConnectorConfigRequest {
            config: config.clone(),
        })
        .await
        .expect("validate");
    seen_grpc.push(format!("{validation:?}"));
    let refused = grpc
        .create_connector(CreateConnectorRequest {
            name: "bad".into(),
            config,
        })
        .await
        .expect_err("bad url");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    seen_grpc.push(format!("{refused:?}"));

    let everything = format!("{}\n{}", m.seen.join("\n"), seen_grpc.join("\n"));
    for pw in [PW_FIELD, PW_URL, PW_SFTP, PW_BAD_URL, "pp-Qw12"] {
        assert!(
            !everything.contains(pw),
            "{pw} appears in a response:\n{everything}"
        );
    }
    assert!(everything.contains("[hidden]"));
    m.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_file_references_resolve_at_start_and_stay_references() {
    let mut m = Manager::start().await;
    let secrets = m.dir.path().join("db.properties");
    std::fs::write(
        &secrets,
        format!("# the sink's secrets\ntopic = from-file-topic\npassword={PW_FILE}\n"),
    )
    .expect("write");
    let file_ref = |key: &str| format!("${{file:{}:{key}}}", secrets.display());
    // Cargo sets CARGO_PKG_NAME for the tests it runs.
    let package = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
    let (code, body) = m
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "refs", "config": sink(&[
                ("topics", &format!("{},${{env:CARGO_PKG_NAME}}", file_ref("topic"))),
                ("connection.password", &file_ref("password")),
            ])})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (_, config) = m.call(Method::GET, "/connectors/refs/config", None).await;
    assert_eq!(
        config["topics"],
        format!("{},${{env:CARGO_PKG_NAME}}", file_ref("topic")),
        "the API shows the reference"
    );
    assert_eq!(config["connection.password"], "[hidden]");
    // The running connector has the resolved values: its topics.
    let (_, topics) = m.call(Method::GET, "/connectors/refs/topics", None).await;
    assert_eq!(
        topics["refs"]["topics"],
        json!(["from-file-topic", package]),
        "{topics}"
    );
    let store = m.store();
    assert!(store.contains(&file_ref("password")), "{store}");
    assert!(
        !store.contains(PW_FILE),
        "the store keeps the reference: {store}"
    );

    // A reference that does not resolve is refused, naming it (not a value).
    for (reference, says) in [
        ("${env:ETL_TEST_NO_SUCH_VARIABLE}".to_string(), "not set"),
        (file_ref("nokey"), "no key"),
        (
            format!(
                "${{file:{}:password}}",
                m.dir.path().join("missing").display()
            ),
            "cannot read",
        ),
        ("${env:ETL_API_TOKEN}".to_string(), "control plane"),
    ] {
        let (code, body) = m
            .call(
                Method::POST,
                "/connectors",
                Some(json!({"name": "unresolved", "config": sink(&[("connection.password", &reference)])})),
            )
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{reference}: {body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&reference) && message.contains(says),
            "{body}"
        );
    }
    let everything = m.seen.join("\n");
    assert!(!everything.contains(PW_FILE), "{everything}");
    m.stop();
}
