//! One trace per file, from ingest to Postgres row. Every service runs as its own
//! process (so each has its own `service.name`) and exports OTLP/gRPC to a real
//! collector inside this test; the traces are then read back through the same
//! Jaeger query shape that `etlctl trace` and the Jaeger UI use.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use etl_telemetry::jaeger::{SpanView, parse_trace};
use tokio_util::sync::CancellationToken;

const SERVICES: [&str; 4] = [
    "extractor",
    "sftp-gateway",
    "connect-manager",
    "sink-verifier",
];

fn port() -> u16 {
    testkit::free_port()
}

/// Waits until the collector holds trace `id` with spans from `services` and a
/// database write, then returns its spans (spans arrive in export batches).
async fn wait_for_trace(
    collector: &etl_telemetry::collector::Collector,
    id: &str,
    services: &[&str],
) -> Vec<SpanView> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let spans = match collector.trace_json(id).await {
            Some(j) => parse_trace(&j).unwrap_or_default(),
            None => Vec::new(),
        };
        let have: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let has_db = spans.iter().any(|s| {
            s.tags
                .get("db.system.name")
                .is_some_and(|v| v == "postgresql")
        });
        // The verifier's own `verify file` span closes the trace, and may come in a
        // later export batch than its `rpc.server` span.
        let verified = !services.contains(&"sink-verifier")
            || spans.iter().any(|s| s.operation == "verify file");
        if services.iter().all(|s| have.contains(s)) && has_db && verified {
            return spans;
        }
        if tokio::time::Instant::now() > deadline {
            let ops: Vec<String> = spans
                .iter()
                .map(|s| format!("{}:{}", s.service, s.operation))
                .collect();
            panic!("trace {id}: wanted spans of {services:?} and a postgres write; got {ops:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn find<'a>(spans: &'a [SpanView], service: &str, op: &str) -> &'a SpanView {
    spans
        .iter()
        .find(|s| s.service == service && s.operation == op)
        .unwrap_or_else(|| {
            let ops: Vec<String> = spans
                .iter()
                .map(|s| format!("{}:{}", s.service, s.operation))
                .collect();
            panic!("no span {service}:{op} in {ops:?}")
        })
}

/// Every span's parent is in the trace, except the one root.
fn assert_one_root(spans: &[SpanView], root_service: &str) {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.parent_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "one root span, got {:?}",
        roots
            .iter()
            .map(|s| (&s.service, &s.operation))
            .collect::<Vec<_>>()
    );
    assert_eq!(roots[0].service, root_service);
}

fn assert_semantic_conventions(spans: &[SpanView], topic: &str) {
    let send = find(spans, "connect-manager", &format!("send {topic}"));
    assert_eq!(
        send.tags.get("messaging.system").map(String::as_str),
        Some("kafka")
    );
    assert_eq!(
        send.tags
            .get("messaging.destination.name")
            .map(String::as_str),
        Some(topic)
    );
    assert_eq!(
        send.tags
            .get("messaging.operation.type")
            .map(String::as_str),
        Some("send")
    );
    let process = find(spans, "connect-manager", &format!("process {topic}"));
    assert_eq!(
        process.tags.get("messaging.system").map(String::as_str),
        Some("kafka")
    );
    assert_eq!(
        process
            .tags
            .get("messaging.operation.type")
            .map(String::as_str),
        Some("process")
    );
    let db = spans
        .iter()
        .find(|s| {
            s.tags
                .get("db.system.name")
                .is_some_and(|v| v == "postgresql")
        })
        .expect("a database span");
    assert!(
        db.tags.contains_key("db.operation.name"),
        "db span tags: {:?}",
        db.tags
    );
    assert_eq!(
        db.tags.get("db.collection.name").map(String::as_str),
        Some("review")
    );
    // The database write happens under the processing of the file's records.
    let by_id: HashMap<&str, &SpanView> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut cur = db;
    let mut under_process = false;
    while let Some(p) = cur.parent_id.as_deref().and_then(|p| by_id.get(p)) {
        if p.operation == format!("process {topic}") {
            under_process = true;
        }
        cur = p;
    }
    assert!(
        under_process,
        "the postgres span descends from `process review-etl`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_file_is_one_trace_across_all_services() {
    // --- the collector, inside the test
    let stop = CancellationToken::new();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind otlp");
    let ui = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ui");
    let collector = etl_telemetry::collector::start(otlp, ui, stop.clone()).expect("collector");
    let otel = format!("http://{}", collector.otlp_addr);

    // --- servers
    let pg = testkit::shared_postgres().expect("postgres");
    let db = testkit::unique_name("trace");
    let db_url = pg.create_database(&db).await.expect("database");
    let kafka = testkit::shared_broker().expect("kafka broker");
    let topic = testkit::unique_name("review_etl");
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = testkit::test_log_dir().expect("log dir");

    // A key for the plain OpenSSH upload below.
    let key = dir.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            key.to_str().expect("utf8"),
        ])
        .status()
        .expect("ssh-keygen");
    assert!(st.success());

    let (sftp_port, gw_port, cm_port, rest_port, sv_port, ex_port) =
        (port(), port(), port(), port(), port(), port());
    let common = |name: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otel.clone()),
            ("OTEL_SERVICE_NAME", name.to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
            ("LOG_FORMAT", "json".to_string()),
        ]
    };
    let sftp_dir = dir.path().join("sftp");
    let pubkey = format!("etl:{}.pub", key.display());
    let gateway_args = [
        "--sftp-addr".to_string(),
        format!("127.0.0.1:{sftp_port}"),
        "--grpc-addr".to_string(),
        format!("127.0.0.1:{gw_port}"),
        "--data-dir".to_string(),
        sftp_dir.to_str().expect("utf8").to_string(),
        "--authorized-key".to_string(),
        pubkey.clone(),
    ];
    let spawn_gateway = || {
        let args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
        e2e::Service::spawn("sftp-gateway", &args, &common("sftp-gateway"), &logs)
    };
    let gateway = spawn_gateway();
    let verifier = e2e::Service::spawn(
        "sink-verifier",
        &[
            "--grpc-addr",
            &format!("127.0.0.1:{sv_port}"),
            "--database-url",
            &db_url,
            "--poll-interval-ms",
            "500",
        ],
        &common("sink-verifier"),
        &logs,
    );
    let connect_dir = dir.path().join("connect");
    let connect_args = [
        "--grpc-addr".to_string(),
        format!("127.0.0.1:{cm_port}"),
        "--rest-addr".to_string(),
        format!("127.0.0.1:{rest_port}"),
        "--kafka-brokers".to_string(),
        kafka.bootstrap(),
        "--data-dir".to_string(),
        connect_dir.to_str().expect("utf8").to_string(),
    ];
    let spawn_connect = || {
        let args: Vec<&str> = connect_args.iter().map(String::as_str).collect();
        e2e::Service::spawn("connect-manager", &args, &common("connect-manager"), &logs)
    };
    let connect = spawn_connect();
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let verifier_url = format!("http://127.0.0.1:{sv_port}");
    let extractor_url = format!("http://127.0.0.1:{ex_port}");
    let extractor = e2e::Service::spawn(
        "extractor",
        &[
            "serve",
            "--grpc-addr",
            &format!("127.0.0.1:{ex_port}"),
            "--sftp-addr",
            &format!("127.0.0.1:{sftp_port}"),
            "--sftp-user",
            "etl",
            "--sftp-password",
            "etl",
            "--verifier-url",
            &verifier_url,
            "--gateway-url",
            &gateway_url,
            // StartRun reads below its input directories only.
            "--input-dir",
            dir.path().to_str().expect("utf8"),
        ],
        &common("extractor"),
        &logs,
    );
    let connect_url = format!("http://127.0.0.1:{cm_port}");
    for (name, url) in [
        ("sftp-gateway", &gateway_url),
        ("sink-verifier", &verifier_url),
        ("connect-manager", &connect_url),
        ("extractor", &extractor_url),
    ] {
        e2e::wait_serving(name, url).await;
    }

    let vars: HashMap<&str, String> = HashMap::from([
        ("ETL_SFTP_HOST", "127.0.0.1".to_string()),
        ("ETL_SFTP_PORT", sftp_port.to_string()),
        ("ETL_GATEWAY_URL", gateway_url.clone()),
        ("ETL_TOPIC", topic.clone()),
        ("ETL_PG_HOST", "127.0.0.1".to_string()),
        ("ETL_PG_PORT", pg.port().to_string()),
        ("ETL_PG_DATABASE", db.clone()),
    ]);
    assert_eq!(e2e::apply_connectors(&connect_url, &vars).await, 2);

    // --- a run through the extractor: 3 files
    let input = dir.path().join("reviews.csv");
    extractor::generate(
        260,
        11,
        etl_core::review::LabelScheme::Polarity,
        std::fs::File::create(&input).expect("input"),
    )
    .expect("generate");
    let run_id = testkit::unique_name("run");
    let (_, report) =
        e2e::run_and_verify(&extractor_url, &verifier_url, &input, &run_id, 100).await;
    assert!(report.files >= 2, "several files: {report:?}");

    let (client, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .expect("pg");
    tokio::spawn(conn);
    let mut file_traces = BTreeSet::new();
    for f in &report.file_reports {
        // Each row of the file carries the file's trace id, and only that one.
        let ids: Vec<String> = client
            .query(
                "select distinct _etl_trace_id from review where _etl_file = $1",
                &[&f.file_name],
            )
            .await
            .expect("trace ids")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            ids,
            vec![f.trace_id.clone()],
            "rows of {} carry the file's trace id",
            f.file_name
        );
        assert!(file_traces.insert(f.trace_id.clone()), "one trace per file");

        let spans = wait_for_trace(&collector, &f.trace_id, &SERVICES).await;
        assert_one_root(&spans, "extractor");
        assert_semantic_conventions(&spans, &topic);
        find(&spans, "sftp-gateway", "sftp.receive");
        find(&spans, "sink-verifier", "verify file");
    }

    // No other trace speaks of these files: exactly one trace per file.
    for t in collector.complete_traces_json().await {
        let spans = parse_trace(&t).unwrap_or_default();
        let Some(first) = spans.first() else { continue };
        if file_traces.contains(&first.trace_id) {
            continue;
        }
        for s in &spans {
            for f in &report.file_reports {
                assert!(
                    !s.tags.values().any(|v| v.ends_with(&f.file_name)),
                    "span {}:{} of another trace names {}",
                    s.service,
                    s.operation,
                    f.file_name
                );
            }
        }
    }

    // --- a plain OpenSSH upload: its trace starts at the gateway
    let plain = dir.path().join("plain_upload.csv");
    // The columns of the topic's schema (pinned by the first file): anything else
    // would go to error/.
    std::fs::write(
        &plain,
        "header\tbody\tfeedback_type\tsource\tis_streaming\tlanguage_code\n\
         hello\tworld\tpositive\tsftp\tfalse\ten\n\
         good\tday\tnegative\tsftp\ttrue\ten\n",
    )
    .expect("write plain file");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!("put {} input/plain_upload.csv\n", plain.display()),
    )
    .expect("batch");
    let out = std::process::Command::new("sftp")
        .args([
            "-b",
            batch.to_str().expect("utf8"),
            "-i",
            key.to_str().expect("utf8"),
            "-P",
            &sftp_port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "etl@127.0.0.1",
        ])
        .output()
        .expect("run sftp");
    assert!(
        out.status.success(),
        "sftp upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let trace_id: String = loop {
        let rows = client
            .query(
                "select distinct _etl_trace_id from review where _etl_file = 'plain_upload.csv'",
                &[],
            )
            .await
            .map(|r| {
                r.iter()
                    .map(|r| r.get::<_, Option<String>>(0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if let [Some(id)] = rows.as_slice() {
            break id.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "plain upload never landed: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let spans = wait_for_trace(&collector, &trace_id, &["sftp-gateway", "connect-manager"]).await;
    assert_one_root(&spans, "sftp-gateway");
    assert_semantic_conventions(&spans, &topic);

    // --- files that no live notice announces: each must still be one trace from
    // the extractor to Postgres, its context read back from the gateway.
    let client_cm = || async {
        etl_proto::v1::connect_manager_client::ConnectManagerClient::connect(connect_url.clone())
            .await
            .expect("connect-manager gRPC")
    };
    let delete_source = || async {
        client_cm()
            .await
            .delete_connector(etl_proto::v1::DeleteConnectorRequest {
                name: "sftp-csv-source".into(),
            })
            .await
            .expect("delete the source connector");
    };
    let mut case = 0;
    let mut extract = |what: &'static str| {
        case += 1;
        let input = dir.path().join(format!("reviews-{case}.csv"));
        extractor::generate(
            120,
            20 + case,
            etl_core::review::LabelScheme::Polarity,
            std::fs::File::create(&input).expect("input"),
        )
        .expect("generate");
        let run_id = testkit::unique_name(&format!("run-{what}"));
        (input, run_id)
    };

    // (a) the source connector is created after the upload.
    delete_source().await;
    let (input, run_a) = extract("late-connector");
    e2e::run_extractor(&extractor_url, &input, &run_a, 100).await;
    assert_eq!(e2e::apply_connectors(&connect_url, &vars).await, 2);
    let report = e2e::wait_verified(&verifier_url, &run_a).await;
    check_files(&collector, &client, &report, &topic, "late connector").await;

    // (b) the gateway restarts between the upload and the pick-up.
    delete_source().await;
    let (input, run_b) = extract("gateway-restart");
    e2e::run_extractor(&extractor_url, &input, &run_b, 100).await;
    gateway.stop();
    let gateway = spawn_gateway();
    e2e::wait_serving("sftp-gateway", &gateway_url).await;
    assert_eq!(e2e::apply_connectors(&connect_url, &vars).await, 2);
    let report = e2e::wait_verified(&verifier_url, &run_b).await;
    check_files(&collector, &client, &report, &topic, "gateway restart").await;

    // (c) connect-manager restarts between the upload and the pick-up.
    connect.stop();
    let (input, run_c) = extract("manager-restart");
    e2e::run_extractor(&extractor_url, &input, &run_c, 100).await;
    let connect = spawn_connect();
    e2e::wait_serving("connect-manager", &connect_url).await;
    let report = e2e::wait_verified(&verifier_url, &run_c).await;
    check_files(
        &collector,
        &client,
        &report,
        &topic,
        "connect-manager restart",
    )
    .await;

    for s in [extractor, connect, verifier, gateway] {
        s.stop();
    }
    stop.cancel();
}

/// Every file of `report`: its rows carry one trace id, and that trace has spans of
/// all four services and the Postgres write under exactly one root, the extractor's.
async fn check_files(
    collector: &etl_telemetry::collector::Collector,
    client: &tokio_postgres::Client,
    report: &etl_proto::v1::RunReport,
    topic: &str,
    case: &str,
) {
    assert!(!report.file_reports.is_empty(), "{case}: no files");
    for f in &report.file_reports {
        let ids: Vec<Option<String>> = client
            .query(
                "select distinct _etl_trace_id from review where _etl_file = $1",
                &[&f.file_name],
            )
            .await
            .expect("trace ids")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            ids,
            vec![Some(f.trace_id.clone())],
            "{case}: rows of {} carry the extractor's trace id",
            f.file_name
        );
        let spans = wait_for_trace(collector, &f.trace_id, &SERVICES).await;
        assert_one_root(&spans, "extractor");
        assert_semantic_conventions(&spans, topic);
    }
}
