//! Secrets stay secret: a whole run with an API token, an SFTP password and a
//! database password, plus the errors that tempt a program to print them (a
//! malformed database URL, an unreachable database, a failed SFTP login).
//! No API response and no line of any service's log shows any of them.

use std::{collections::HashMap, path::Path, time::Duration};

use etl_proto::v1::{
    CreateConnectorRequest, GetConnectorStatusRequest, ListConnectorsRequest,
    ValidateConnectorConfigRequest, connect_manager_client::ConnectManagerClient,
};
use etl_service::{ClientAuth, auth::Token};

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A value no program would print by chance.
fn secret(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// Fails naming the first secret found in `text` (never the secret itself,
/// so that this failure message does not leak it either).
fn assert_clean(where_: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, value) in secrets {
        assert!(
            !text.contains(value),
            "{where_} shows the {name} (look for it in the output above this test)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_an_api_response_or_a_log_line() {
    let token = secret("token");
    let sftp_password = secret("sftp");
    let pg_password = secret("pg");
    let wrong_password = secret("wrong");
    let secrets = [
        ("API token", token.as_str()),
        ("SFTP password", sftp_password.as_str()),
        ("database password", pg_password.as_str()),
        ("mistyped password", wrong_password.as_str()),
    ];

    // --- servers: a role with a password (the test cluster trusts every local
    // connection, so the password travels everywhere but is not checked).
    let pg = testkit::shared_postgres().expect("postgres");
    let db = testkit::unique_name("secrets");
    pg.create_database(&db).await.expect("database");
    let role = testkit::unique_name("writer");
    pg.connect("postgres")
        .await
        .expect("admin connection")
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{pg_password}'"
        ))
        .await
        .expect("create role");
    let db_url = format!(
        "postgres://{role}:{pg_password}@127.0.0.1:{}/{db}",
        pg.port()
    );
    let kafka = testkit::shared_broker().expect("kafka broker");
    let topic = testkit::unique_name("secrets");
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");

    // --- services, configured as users do: secrets in the environment, never
    // on the command line.
    let (sftp_port, gw_port, cm_port, rest_port, sv_port, ex_port) =
        (port(), port(), port(), port(), port(), port());
    let env = |extra: &[(&'static str, &str)]| {
        let mut env = vec![
            ("ETL_API_TOKEN", token.clone()),
            ("LOG_FORMAT", "json".to_string()),
            // Every line a service can write: the leak may hide at any level.
            ("RUST_LOG", "debug".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let verifier_url = format!("http://127.0.0.1:{sv_port}");
    let connect_url = format!("http://127.0.0.1:{cm_port}");
    let extractor_url = format!("http://127.0.0.1:{ex_port}");
    let rest_url = format!("http://127.0.0.1:{rest_port}");
    let sftp_dir = dir.path().join("sftp");
    let connect_dir = dir.path().join("connect");
    let services = [
        e2e::Service::spawn(
            "sftp-gateway",
            &[
                "--sftp-addr",
                &format!("127.0.0.1:{sftp_port}"),
                "--grpc-addr",
                &format!("127.0.0.1:{gw_port}"),
                "--data-dir",
                sftp_dir.to_str().expect("utf8"),
            ],
            &env(&[
                ("ETL_SFTP_USER", "etl"),
                ("ETL_SFTP_PASSWORD", &sftp_password),
            ]),
            &logs,
        ),
        e2e::Service::spawn(
            "sink-verifier",
            &[
                "--grpc-addr",
                &format!("127.0.0.1:{sv_port}"),
                "--poll-interval-ms",
                "500",
                "--gateway-url",
                &gateway_url,
            ],
            &env(&[("ETL_DATABASE_URL", &db_url)]),
            &logs,
        ),
        e2e::Service::spawn(
            "connect-manager",
            &[
                "--grpc-addr",
                &format!("127.0.0.1:{cm_port}"),
                "--rest-addr",
                &format!("127.0.0.1:{rest_port}"),
                "--kafka-brokers",
                &kafka.bootstrap(),
                "--data-dir",
                connect_dir.to_str().expect("utf8"),
            ],
            &env(&[]),
            &logs,
        ),
        e2e::Service::spawn(
            "extractor",
            &[
                "serve",
                "--grpc-addr",
                &format!("127.0.0.1:{ex_port}"),
                "--sftp-addr",
                &format!("127.0.0.1:{sftp_port}"),
                "--verifier-url",
                &verifier_url,
                "--gateway-url",
                &gateway_url,
                "--input-dir",
                dir.path().to_str().expect("utf8"),
            ],
            &env(&[
                ("ETL_SFTP_USER", "etl"),
                ("ETL_SFTP_PASSWORD", &sftp_password),
            ]),
            &logs,
        ),
    ];
    for (name, url) in [
        ("sftp-gateway", &gateway_url),
        ("sink-verifier", &verifier_url),
        ("connect-manager", &connect_url),
        ("extractor", &extractor_url),
    ] {
        e2e::wait_serving(name, url).await;
    }
    let auth = ClientAuth::token(Token::new(&token, "the test").expect("token"));

    // --- a run, with the connectors of deploy/connectors carrying both passwords
    let vars: HashMap<&str, String> = HashMap::from([
        ("ETL_SFTP_HOST", "127.0.0.1".to_string()),
        ("ETL_SFTP_PORT", sftp_port.to_string()),
        ("ETL_SFTP_PASSWORD", sftp_password.clone()),
        ("ETL_GATEWAY_URL", gateway_url.clone()),
        ("ETL_TOPIC", topic.clone()),
        ("ETL_PG_HOST", "127.0.0.1".to_string()),
        ("ETL_PG_PORT", pg.port().to_string()),
        ("ETL_PG_DATABASE", db.clone()),
        ("ETL_PG_USER", role.clone()),
        ("ETL_PG_PASSWORD", pg_password.clone()),
    ]);
    assert_eq!(
        e2e::apply_connectors_with(&auth, &connect_url, &vars).await,
        2
    );
    let input = dir.path().join("reviews.csv");
    etl_datagen::generate(
        150,
        3,
        etl_core::review::LabelScheme::Polarity,
        std::fs::File::create(&input).expect("input"),
    )
    .expect("generate");
    let run_id = testkit::unique_name("run");
    let (_, report) =
        e2e::run_and_verify_with(&auth, &extractor_url, &verifier_url, &input, &run_id, 50).await;
    assert_eq!(report.missing, 0, "{report:?}");
    assert!(report.rows_landed > 0, "{report:?}");

    // --- errors that tempt a program to print the secret
    let mut cm = ConnectManagerClient::new(auth.connect(&connect_url).await.expect("grpc"));
    let sink_config = |url: String| -> HashMap<String, String> {
        HashMap::from([
            (
                "connector.class".to_string(),
                "io.confluent.connect.jdbc.JdbcSinkConnector".to_string(),
            ),
            ("topics".to_string(), topic.clone()),
            ("connection.url".to_string(), url),
            ("connection.user".to_string(), role.clone()),
            ("connection.password".to_string(), pg_password.clone()),
            ("auto.create".to_string(), "true".to_string()),
        ])
    };
    // A URL that does not parse, with the password inside it.
    let malformed = cm
        .create_connector(CreateConnectorRequest {
            name: "malformed".into(),
            config: sink_config(format!(
                "jdbc:postgresql://127.0.0.1:notaport/{db}?user={role}&password={pg_password}"
            )),
        })
        .await
        .expect_err("a malformed URL is refused");
    assert_clean(
        "the refusal of a malformed URL",
        malformed.message(),
        &secrets,
    );
    let validation = cm
        .validate_connector_config(ValidateConnectorConfigRequest {
            config: sink_config(format!(
                "postgresql://{role}:{pg_password}@127.0.0.1:notaport/{db}"
            )),
        })
        .await
        .map(|r| format!("{:?}", r.into_inner()))
        .unwrap_or_else(|e| e.message().to_string());
    assert_clean("a validation", &validation, &secrets);
    // A database that does not answer: the task retries and reports why.
    let closed = port();
    cm.create_connector(CreateConnectorRequest {
        name: "unreachable".into(),
        config: sink_config(format!(
            "jdbc:postgresql://127.0.0.1:{closed}/{db}?password={pg_password}"
        )),
    })
    .await
    .expect("an unreachable database is a runtime failure, not a config error");
    // A failed SFTP login with a mistyped password.
    let mistyped = etl_sftp::SftpConfig::from_addr(
        &format!("127.0.0.1:{sftp_port}"),
        "etl",
        etl_sftp::SftpAuth::Password(wrong_password.clone()),
    )
    .expect("sftp config");
    let login = etl_sftp::SftpClient::connect(&mistyped).await;
    assert!(login.is_err(), "the mistyped password is refused");
    // Time for the unreachable sink to fail and log its retries.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // --- every API answer about the connectors
    let mut answers = Vec::new();
    let listed = cm
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("list");
    answers.push(format!("{:?}", listed.into_inner()));
    for name in ["postgres-sink", "sftp-csv-source", "unreachable"] {
        let status = cm
            .get_connector_status(GetConnectorStatusRequest { name: name.into() })
            .await
            .expect("status");
        answers.push(format!("{:?}", status.into_inner()));
    }
    let http = reqwest::Client::new();
    let mut paths = vec!["/connectors?expand=info&expand=status".to_string()];
    for name in ["postgres-sink", "sftp-csv-source", "unreachable"] {
        for tail in [
            "",
            "/config",
            "/status",
            "/tasks",
            "/tasks-config",
            "/offsets",
        ] {
            paths.push(format!("/connectors/{name}{tail}"));
        }
    }
    for path in &paths {
        let response = http
            .get(format!("{rest_url}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        answers.push(response.text().await.expect("body"));
    }
    let answers = answers.join("\n");
    assert_clean("an API response", &answers, &secrets);
    assert!(
        answers.contains("[hidden]") && answers.contains(&role),
        "the answers show the config, with secrets masked: {answers}"
    );

    // --- every log line of every service
    for s in services {
        s.stop();
    }
    let mut logged = 0;
    for entry in std::fs::read_dir(&logs).expect("logs") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read log");
        logged += text.lines().count();
        assert_clean(&format!("log {}", file_name(&path)), &text, &secrets);
    }
    // The logs are there and say things: a leak would have had room to appear.
    assert!(logged > 50, "only {logged} log lines were captured");
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
