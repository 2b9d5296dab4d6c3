//! Start order never matters: every service waits for what it needs with backoff and
//! reports NOT_SERVING meanwhile. Each case starts everything but one component, starts
//! that one 10 s later, and a run must then complete with every row verified.
//!
//! Postgres and Kafka are started per case (one of them is the late one), the four
//! services as processes of their real binaries.

use std::{collections::HashMap, time::Duration};

use testkit::{Broker, PgCluster, Storage};

/// What starts late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Late {
    Postgres,
    Broker,
    Gateway,
    Verifier,
}

const LATE_BY: Duration = Duration::from_secs(10);

async fn start_broker(dir: &std::path::Path, port: u16) -> Broker {
    let storage = Storage::Kafka(dir.to_path_buf());
    tokio::task::spawn_blocking(move || Broker::builder(storage).port(port).start())
        .await
        .expect("join")
        .expect("kafka")
}

async fn case(late: Late) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = testkit::test_log_dir().expect("log dir");
    let port = testkit::free_port;
    let (pg_port, kafka_port, sftp_port, gw_port, cm_port, rest_port, sv_port, ex_port) = (
        port(),
        port(),
        port(),
        port(),
        port(),
        port(),
        port(),
        port(),
    );
    let kafka_dir = dir.path().join("kafka");
    let env = |name: &str| {
        vec![
            ("LOG_FORMAT", "json".to_string()),
            ("RUST_LOG", format!("{}=info", name.replace('-', "_"))),
        ]
    };

    // Postgres on a fixed port so the services can be told its URL before it runs.
    let pg_builder = PgCluster::builder().port(pg_port);
    let start_pg = || async {
        let b = pg_builder.clone();
        let pg = tokio::task::spawn_blocking(move || b.start())
            .await
            .expect("join")
            .expect("postgres");
        pg.ensure_database("nlp_db").await.expect("database");
        pg
    };
    let db_url = format!("postgres://postgres@127.0.0.1:{pg_port}/nlp_db");
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let verifier_url = format!("http://127.0.0.1:{sv_port}");
    let connect_url = format!("http://127.0.0.1:{cm_port}");
    let extractor_url = format!("http://127.0.0.1:{ex_port}");
    let sftp_dir = dir.path().join("sftp");
    let connect_dir = dir.path().join("connect");
    let gateway_args = vec![
        "--sftp-addr".to_string(),
        format!("127.0.0.1:{sftp_port}"),
        "--grpc-addr".to_string(),
        format!("127.0.0.1:{gw_port}"),
        "--data-dir".to_string(),
        sftp_dir.display().to_string(),
    ];
    let verifier_args = vec![
        "--grpc-addr".to_string(),
        format!("127.0.0.1:{sv_port}"),
        "--database-url".to_string(),
        db_url.clone(),
        "--gateway-url".to_string(),
        gateway_url.clone(),
        "--poll-interval-ms".to_string(),
        "500".to_string(),
    ];
    let spawn = |name: &'static str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        e2e::Service::spawn(name, &args, &env(name), &logs)
    };

    let mut pg = None;
    let mut broker = None;
    if late != Late::Postgres {
        pg = Some(start_pg().await);
    }
    if late != Late::Broker {
        broker = Some(start_broker(&kafka_dir, kafka_port).await);
    }
    let gateway = (late != Late::Gateway).then(|| spawn("sftp-gateway", &gateway_args));
    let verifier = (late != Late::Verifier).then(|| spawn("sink-verifier", &verifier_args));
    let connect = spawn(
        "connect-manager",
        &[
            "--grpc-addr".to_string(),
            format!("127.0.0.1:{cm_port}"),
            "--rest-addr".to_string(),
            format!("127.0.0.1:{rest_port}"),
            "--kafka-brokers".to_string(),
            format!("127.0.0.1:{kafka_port}"),
            "--data-dir".to_string(),
            connect_dir.display().to_string(),
        ],
    );
    let extractor = spawn(
        "extractor",
        &[
            "serve".to_string(),
            "--grpc-addr".to_string(),
            format!("127.0.0.1:{ex_port}"),
            "--sftp-addr".to_string(),
            format!("127.0.0.1:{sftp_port}"),
            "--sftp-user".to_string(),
            "etl".to_string(),
            "--sftp-password".to_string(),
            "etl".to_string(),
            "--verifier-url".to_string(),
            verifier_url.clone(),
            "--gateway-url".to_string(),
            gateway_url.clone(),
            // StartRun reads below its input directories only.
            "--input-dir".to_string(),
            dir.path().display().to_string(),
        ],
    );

    // The connectors are applied while a dependency is still missing (connect-manager
    // itself answers as soon as it runs).
    let vars: HashMap<&str, String> = HashMap::from([
        ("ETL_SFTP_HOST", "127.0.0.1".to_string()),
        ("ETL_SFTP_PORT", sftp_port.to_string()),
        ("ETL_GATEWAY_URL", gateway_url.clone()),
        ("ETL_TOPIC", "review-etl".to_string()),
        ("ETL_PG_HOST", "127.0.0.1".to_string()),
        ("ETL_PG_PORT", pg_port.to_string()),
        ("ETL_PG_DATABASE", "nlp_db".to_string()),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if etl_service::probe_health(&connect_url).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connect-manager never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(e2e::apply_connectors(&connect_url, &vars).await, 2);

    let input = dir.path().join("reviews.csv");
    extractor::generate(
        300,
        5,
        etl_core::review::LabelScheme::Polarity,
        std::fs::File::create(&input).expect("input"),
    )
    .expect("generate");
    let run_id = testkit::unique_name("order");
    // The run starts while the late one is still away, and completes once it is up.
    let run = {
        let (extractor_url, input, run_id) = (extractor_url.clone(), input.clone(), run_id.clone());
        tokio::spawn(async move { e2e::run_extractor(&extractor_url, &input, &run_id, 100).await })
    };
    tokio::time::sleep(LATE_BY).await;
    let late_process = match late {
        Late::Postgres => {
            pg = Some(start_pg().await);
            None
        }
        Late::Broker => {
            broker = Some(start_broker(&kafka_dir, kafka_port).await);
            None
        }
        Late::Gateway => Some(spawn("sftp-gateway", &gateway_args)),
        Late::Verifier => Some(spawn("sink-verifier", &verifier_args)),
    };
    run.await.expect("extractor run");
    let report = e2e::wait_verified(&verifier_url, &run_id).await;
    assert!(report.files >= 2, "{late:?}: {report:?}");
    assert_eq!(report.files_verified, report.files, "{late:?}: {report:?}");
    assert_eq!(
        (report.missing, report.duplicates, report.altered),
        (0, 0, 0),
        "{late:?}: {report:?}"
    );
    assert_eq!(
        report.rows_landed, report.rows_expected,
        "{late:?}: {report:?}"
    );
    assert_eq!(report.state, "PASSED", "{late:?}: {report:?}");

    for s in [
        Some(extractor),
        Some(connect),
        verifier,
        gateway,
        late_process,
    ]
    .into_iter()
    .flatten()
    {
        s.stop();
    }
    drop(broker);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_last() {
    case(Late::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_last() {
    case(Late::Broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_last() {
    case(Late::Gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_last() {
    case(Late::Verifier).await;
}
