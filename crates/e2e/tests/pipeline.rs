//! The whole pipeline on real servers: generated Amazon reviews go through the
//! extractor, SFTP, the gateway, the source connector, Kafka (tansu), the sink
//! connector and Postgres, and the verifier proves they arrived. Then the rows in
//! Postgres are checked against the chunk files and the raw input, value by value.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use clap::Parser;
use etl_service::Shutdown;

/// Builds a service's config from command-line words, exactly as its binary would.
#[derive(Parser)]
struct Args<T: clap::Args> {
    #[command(flatten)]
    config: T,
}

fn config<T: clap::Args>(args: &[&str]) -> T {
    let words = std::iter::once("svc").chain(args.iter().copied());
    Args::<T>::try_parse_from(words)
        .expect("valid flags")
        .config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reviews_travel_from_csv_to_postgres_exactly_once() {
    etl_telemetry::init_for_tests();
    let pg = testkit::shared_postgres().expect("postgres");
    let db = testkit::unique_name("e2e");
    let db_url = pg.create_database(&db).await.expect("database");
    let kafka = testkit::shared_broker().expect("kafka broker");
    let topic = testkit::unique_name("review_etl");
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = Shutdown::new();

    // --- the four services, in-process on port 0
    let sftp_dir = dir.path().join("sftp");
    let gateway = sftp_gateway::start(
        config(&[
            "--sftp-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            sftp_dir.to_str().expect("utf8"),
            "--sftp-user",
            "etl",
            "--sftp-password",
            "etl",
        ]),
        shutdown.clone(),
    )
    .await
    .expect("gateway starts");
    let verifier = sink_verifier::start(
        config(&[
            "--grpc-addr",
            "127.0.0.1:0",
            "--database-url",
            &db_url,
            "--poll-interval-ms",
            "500",
        ]),
        shutdown.clone(),
    )
    .await
    .expect("verifier starts");
    let connect_dir = dir.path().join("connect");
    let connect = connect_manager::start(
        config(&[
            "--grpc-addr",
            "127.0.0.1:0",
            "--rest-addr",
            "127.0.0.1:0",
            "--kafka-brokers",
            &kafka.bootstrap(),
            "--data-dir",
            connect_dir.to_str().expect("utf8"),
        ]),
        shutdown.clone(),
    )
    .await
    .expect("connect-manager starts");
    let gateway_url = format!("http://{}", gateway.grpc_addr);
    let verifier_url = format!("http://{}", verifier.grpc_addr);
    let sftp_addr = gateway.sftp_addr.to_string();
    let extractor = extractor::start(
        config(&[
            "--grpc-addr",
            "127.0.0.1:0",
            "--sftp-addr",
            &sftp_addr,
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
        ]),
        shutdown.clone(),
    )
    .await
    .expect("extractor starts");

    // --- connectors from deploy/connectors, as etlctl applies them
    let vars: HashMap<&str, String> = HashMap::from([
        ("ETL_SFTP_HOST", "127.0.0.1".to_string()),
        ("ETL_SFTP_PORT", gateway.sftp_addr.port().to_string()),
        ("ETL_SFTP_USER", "etl".to_string()),
        ("ETL_SFTP_PASSWORD", "etl".to_string()),
        ("ETL_GATEWAY_URL", gateway_url.clone()),
        ("ETL_TOPIC", topic.clone()),
        ("ETL_PG_HOST", "127.0.0.1".to_string()),
        ("ETL_PG_PORT", pg.port().to_string()),
        ("ETL_PG_DATABASE", db.clone()),
        ("ETL_PG_USER", "postgres".to_string()),
    ]);
    let applied = e2e::apply_connectors(&format!("http://{}", connect.grpc_addr), &vars).await;
    assert_eq!(applied, 2, "a source and a sink connector");

    // --- input: generated Amazon-format reviews
    let input = dir.path().join("reviews.csv");
    let rows: u64 = 350;
    {
        let f = std::fs::File::create(&input).expect("input file");
        extractor::generate(rows, 7, etl_core::review::LabelScheme::Polarity, f).expect("generate");
    }

    // --- run, and the verifier's word
    let run_id = testkit::unique_name("run");
    let extractor_url = format!("http://{}", extractor.grpc_addr);
    let (last, report) =
        e2e::run_and_verify(&extractor_url, &verifier_url, &input, &run_id, 100).await;
    assert_eq!(last.rows_read, rows);
    assert!(
        last.rows_kept >= rows * 8 / 10,
        "most generated rows are English: {last:?}"
    );
    assert_eq!(last.bad_rows, 0);

    assert_eq!(report.files, last.files);
    assert_eq!(report.rows_expected, last.rows_kept);
    assert_eq!(report.rows_landed, report.rows_expected);
    assert_eq!(
        (report.missing, report.duplicates, report.altered),
        (0, 0, 0)
    );

    // --- Postgres, value by value
    let (client, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .expect("pg");
    tokio::spawn(conn);
    let types: BTreeMap<String, String> = client
        .query(
            "select column_name::text, data_type::text from information_schema.columns where table_name = 'review'",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want_types: BTreeMap<String, String> = [
        ("header", "text"),
        ("body", "text"),
        ("feedback_type", "text"),
        ("source", "text"),
        ("is_streaming", "boolean"),
        ("language_code", "text"),
        ("_etl_file", "text"),
        ("_etl_row", "bigint"),
        ("_etl_trace_id", "text"),
        ("_etl_loaded_at", "timestamp with time zone"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(types, want_types, "review table columns");

    let db_rows = client
        .query(
            "select _etl_file, _etl_row, header, body, feedback_type, source, is_streaming, language_code, _etl_trace_id from review",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(db_rows.len() as u64, report.rows_expected);
    let mut in_db: HashMap<(String, i64), Vec<String>> = HashMap::new();
    let mut trace_of_file: HashMap<String, String> = HashMap::new();
    for r in &db_rows {
        let file: String = r.get(0);
        let trace: String = r.get(8);
        assert_eq!(trace.len(), 32, "row has a trace id: {trace:?}");
        let prev = trace_of_file
            .entry(file.clone())
            .or_insert_with(|| trace.clone());
        assert_eq!(
            prev, &trace,
            "every row of {file} is in the file's one trace"
        );
        let fields = vec![
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, String>(5),
            r.get::<_, bool>(6).to_string(),
            r.get::<_, String>(7),
        ];
        assert!(
            in_db.insert((file, r.get(1)), fields).is_none(),
            "no duplicate (file,row)"
        );
    }

    // Every chunk file ended in finished/, and its rows are exactly the table's.
    let user_root = sftp_dir.join("etl");
    let pending: Vec<_> = std::fs::read_dir(user_root.join("input"))
        .expect("input dir")
        .collect();
    assert!(
        pending.is_empty(),
        "input/ is empty after the run: {pending:?}"
    );
    let errors: Vec<_> = std::fs::read_dir(user_root.join("error"))
        .expect("error dir")
        .collect();
    assert!(errors.is_empty(), "no file was rejected: {errors:?}");
    let mut from_files: HashMap<(String, i64), Vec<String>> = HashMap::new();
    let mut finished = 0;
    for entry in std::fs::read_dir(user_root.join("finished")).expect("finished dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        finished += 1;
        let table = etl_core::table::parse(&std::fs::read(&path).expect("read chunk"), b'\t')
            .expect("chunk parses");
        assert_eq!(table.header, etl_core::review::CHUNK_COLUMNS);
        for (i, row) in table.rows.into_iter().enumerate() {
            from_files.insert((name.clone(), i as i64 + 1), row);
        }
    }
    assert_eq!(finished, report.files, "every file is in finished/");
    assert_eq!(
        in_db, from_files,
        "Postgres holds exactly the rows of the chunk files"
    );

    // And those rows are the raw input, transformed: title → header, label → feedback_type.
    let mut raw = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(&input)
        .expect("input");
    let expected: HashSet<(String, String, String)> = raw
        .records()
        .map(|r| {
            let r = r.expect("input row");
            let fb = etl_core::review::map_label(etl_core::review::LabelScheme::Polarity, &r[0])
                .expect("label");
            (r[1].to_string(), r[2].to_string(), fb.as_str().to_string())
        })
        .collect();
    for fields in in_db.values() {
        assert!(
            expected.contains(&(fields[0].clone(), fields[1].clone(), fields[2].clone())),
            "row not derived from the input: {fields:?}"
        );
        assert_eq!(fields[3], "amazon");
        assert_eq!(fields[4], "false");
        assert_eq!(fields[5], "en");
    }

    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let _ = extractor.wait().await;
        let _ = connect.wait().await;
        let _ = verifier.wait().await;
        let _ = gateway.wait().await;
    })
    .await;
}
