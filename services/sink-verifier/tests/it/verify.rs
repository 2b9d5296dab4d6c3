//! The verifier against a real Postgres: the happy path through NOTIFY, each
//! kind of damage, both fallbacks (rows before registration, no NOTIFY), typed
//! columns, and the API's refusals.

use std::time::Duration;

use etl_proto::v1::{FileManifest, GetReportRequest, RegisterFileRequest};

use crate::{
    TestResult,
    helpers::{REVIEW_COLUMNS, manifest, numbered, review_rows, start},
};

/// Long enough that only NOTIFY or a registration can explain a quick verification.
const NO_POLL: u64 = 600_000;
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn two_files_land_and_the_run_completes() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let run = "run-ok";
    let files = ["run-ok__a__chunk_000001.csv", "run-ok__a__chunk_000002.csv"];
    let rows: Vec<_> = files.iter().map(|f| review_rows(f, 25)).collect();
    for (f, r) in files.iter().zip(&rows) {
        h.register(manifest(run, f, &REVIEW_COLUMNS, r)).await?;
    }
    h.complete(run, 2).await?;
    let before = h.report(run).await?;
    assert!(!before.complete);
    assert_eq!(before.state, "RUNNING");
    assert_eq!((before.files, before.rows_expected), (2, 50));
    // Leave the pipeline a measurable moment between upload and commit.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for (f, r) in files.iter().zip(&rows) {
        h.insert_reviews(f, &numbered(r), true).await?;
    }
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!((report.files, report.files_verified), (2, 2));
    assert_eq!((report.rows_expected, report.rows_landed), (50, 50));
    assert_eq!(
        (report.missing, report.altered, report.duplicates),
        (0, 0, 0)
    );
    assert_eq!(report.state, "PASSED");
    assert_eq!((report.files_rejected, report.content_duplicates), (0, 0));
    let latency = report.latency.ok_or("no latency")?;
    assert!(latency.p50_ms > 0 && latency.p50_ms <= latency.p95_ms);
    assert!(latency.p95_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms);
    assert!(report.elapsed_ms >= latency.max_ms);
    for f in &report.file_reports {
        assert!(f.verified && f.latency_ms > 0, "{f:?}");
        assert_eq!(f.trace_id, crate::helpers::TRACE_ID);
    }
    // The finished run's report, now read back from the store, is the same;
    // registering the same file again changes nothing.
    assert_eq!(h.report(run).await?, report);
    h.register(manifest(run, files[0], &REVIEW_COLUMNS, &rows[0]))
        .await?;
    assert_eq!(h.report(run).await?, report);
    Ok(())
}

#[tokio::test]
async fn a_missing_row_is_reported() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-missing", "run-missing__a__chunk_000001.csv");
    let rows = review_rows(file, 3);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    h.complete(run, 1).await?;
    let mut landed = numbered(&rows);
    landed.remove(1);
    h.insert_reviews(file, &landed, true).await?;
    let report = h.watch_until(run, WAIT, |r| r.rows_landed == 2).await?;
    assert_eq!(
        (report.missing, report.altered, report.duplicates),
        (1, 0, 0)
    );
    assert_eq!(report.files_verified, 0);
    assert!(!report.complete);
    assert_eq!(report.state, "RUNNING");
    assert_eq!(report.file_reports[0].latency_ms, 0);
    Ok(())
}

#[tokio::test]
async fn an_altered_value_is_detected() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-altered", "run-altered__a__chunk_000001.csv");
    let rows = review_rows(file, 4);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    let mut landed = numbered(&rows);
    landed[2].1[1].push_str(" (edited)");
    h.insert_reviews(file, &landed, true).await?;
    let report = h.watch_until(run, WAIT, |r| r.rows_landed == 4).await?;
    assert_eq!(
        (report.missing, report.altered, report.duplicates),
        (0, 1, 0)
    );
    assert!(!report.file_reports[0].verified);
    Ok(())
}

#[tokio::test]
async fn a_row_beyond_row_count_is_a_duplicate() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-extra", "run-extra__a__chunk_000001.csv");
    let rows = review_rows(file, 3);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    let mut landed = numbered(&rows);
    landed.push((4, rows[0].clone()));
    h.insert_reviews(file, &landed, true).await?;
    let report = h.watch_until(run, WAIT, |r| r.duplicates > 0).await?;
    assert_eq!((report.rows_landed, report.missing), (3, 0));
    assert_eq!((report.altered, report.duplicates), (0, 1));
    assert_eq!(report.files_verified, 0);
    Ok(())
}

#[tokio::test]
async fn rows_committed_before_registration_verify_on_registration() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-early", "run-early__a__chunk_000001.csv");
    let rows = review_rows(file, 5);
    let m = manifest(run, file, &REVIEW_COLUMNS, &rows);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The NOTIFY arrives before the manifest: nothing to check yet.
    h.insert_reviews(file, &numbered(&rows), true).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.register(m).await?;
    h.complete(run, 1).await?;
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!((report.rows_landed, report.files_verified), (5, 1));
    Ok(())
}

#[tokio::test]
async fn without_notify_the_poll_finds_the_rows() -> TestResult {
    let mut h = start("review", true, 200).await?;
    let (run, file) = ("run-poll", "run-poll__a__chunk_000001.csv");
    let rows = review_rows(file, 5);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    h.complete(run, 1).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.insert_reviews(file, &numbered(&rows), false).await?;
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!((report.rows_landed, report.missing), (5, 0));
    Ok(())
}

#[tokio::test]
async fn a_missing_table_means_nothing_landed_yet() -> TestResult {
    let mut h = start("review", false, 200).await?;
    let (run, file) = ("run-notable", "run-notable__a__chunk_000001.csv");
    let rows = review_rows(file, 2);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    h.complete(run, 1).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = h.report(run).await?;
    assert_eq!((report.rows_landed, report.missing), (0, 2));
    // The sink creates the table later; the verifier picks it up.
    h.db.batch_execute(crate::helpers::REVIEW_DDL).await?;
    h.insert_reviews(file, &numbered(&rows), true).await?;
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!(report.rows_landed, 2);
    Ok(())
}

/// Typed columns read back render as exactly the text that was registered.
#[tokio::test]
async fn typed_columns_render_back_to_the_registered_text() -> TestResult {
    let mut h = start("measurements", false, NO_POLL).await?;
    h.db.batch_execute(
        "CREATE TABLE measurements (
            name text, n bigint, x double precision, at timestamptz, ok boolean,
            small integer, f real, plain timestamp,
            _etl_file text NOT NULL, _etl_row bigint NOT NULL, _etl_trace_id text,
            _etl_loaded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (_etl_file, _etl_row))",
    )
    .await?;
    let columns = ["name", "n", "x", "at", "ok", "small", "f", "plain"];
    let rows: Vec<Vec<String>> = [
        [
            "a",
            "42",
            "-3.25",
            "2024-01-02T03:04:05.123Z",
            "true",
            "7",
            "1.1",
            "2024-01-02T03:04:05Z",
        ],
        ["", "", "", "", "", "", "", ""],
        [
            "ü \"q\"",
            "-9007199254740991",
            "0.1",
            "2024-02-29T23:59:59.123456Z",
            "false",
            "-2147483648",
            "0.5",
            "1999-12-31T23:59:59.500Z",
        ],
        [
            "z",
            "0",
            "123456789.123",
            "1970-01-01T00:00:00Z",
            "true",
            "0",
            "-2",
            "2024-01-02T03:04:05.000001Z",
        ],
        [
            "y",
            "9223372036854775807",
            "0.0000001",
            "2038-01-19T03:14:08Z",
            "false",
            "1",
            "0.25",
            "2000-01-01T00:00:00Z",
        ],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    let (run, file) = ("run-typed", "run-typed__m__chunk_000001.csv");
    h.register(manifest(run, file, &columns, &rows)).await?;
    h.complete(run, 1).await?;
    let tx = h.db.transaction().await?;
    for (i, r) in rows.iter().enumerate() {
        // Postgres parses the text, as it would parse the sink's typed values.
        tx.execute(
            "INSERT INTO measurements (name, n, x, at, ok, small, f, plain, _etl_file, _etl_row)
             VALUES ($1, NULLIF($2, '')::bigint, NULLIF($3, '')::float8,
                     NULLIF($4, '')::timestamptz, NULLIF($5, '')::boolean,
                     NULLIF($6, '')::integer, NULLIF($7, '')::real,
                     (NULLIF($8, '')::timestamptz AT TIME ZONE 'UTC'), $9, $10)",
            &[
                &r[0],
                &r[1],
                &r[2],
                &r[3],
                &r[4],
                &r[5],
                &r[6],
                &r[7],
                &file,
                &(i as i64 + 1),
            ],
        )
        .await?;
    }
    tx.execute("SELECT pg_notify('etl_rows', $1)", &[&file])
        .await?;
    tx.commit().await?;
    let report = h
        .watch_until(run, WAIT, |r| r.rows_landed == rows.len() as u64)
        .await?;
    assert_eq!(report.altered, 0, "{report:?}");
    assert!(report.complete);
    Ok(())
}

#[tokio::test]
async fn the_api_refuses_bad_manifests_and_unknown_runs() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let rows = review_rows("f", 2);
    let mut bad = manifest("run-bad", "f.csv", &REVIEW_COLUMNS, &rows);
    bad.row_count = 3;
    let e = h
        .grpc
        .register_file(RegisterFileRequest {
            manifest: Some(bad),
        })
        .await
        .err()
        .ok_or("accepted a manifest with too few digests")?;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("row_count is 3 but 2 row digests"),
        "{e}"
    );

    let mut bad = manifest("run-bad", "f.csv", &REVIEW_COLUMNS, &rows);
    bad.checksum ^= 1;
    let e = h
        .grpc
        .register_file(RegisterFileRequest {
            manifest: Some(bad),
        })
        .await
        .err()
        .ok_or("accepted a wrong checksum")?;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("checksum"), "{e}");

    let e = h
        .grpc
        .register_file(RegisterFileRequest { manifest: None })
        .await
        .err()
        .ok_or("accepted no manifest")?;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let good = manifest("run-bad", "f.csv", &REVIEW_COLUMNS, &rows);
    h.register(good.clone()).await?;
    let changed = FileManifest {
        row_digests: vec![1, 2],
        checksum: etl_core::digest::file_checksum(&[1, 2]),
        ..good
    };
    let e = h
        .grpc
        .register_file(RegisterFileRequest {
            manifest: Some(changed),
        })
        .await
        .err()
        .ok_or("accepted different content under the same name")?;
    assert_eq!(e.code(), tonic::Code::AlreadyExists);

    for e in [
        h.grpc
            .get_report(GetReportRequest {
                run_id: "nope".into(),
            })
            .await
            .err(),
        h.grpc
            .watch_report(GetReportRequest {
                run_id: "nope".into(),
            })
            .await
            .err(),
    ] {
        assert_eq!(e.ok_or("unknown run found")?.code(), tonic::Code::NotFound);
    }
    Ok(())
}

#[tokio::test]
async fn health_is_not_serving_until_postgres_answers() -> TestResult {
    let port = testkit::free_port();
    let config = sink_verifier::Config::new(
        "127.0.0.1:0",
        &format!("postgres://postgres:secret@127.0.0.1:{port}/nlp_db"),
    );
    let shutdown = etl_service::Shutdown::new();
    let running = sink_verifier::start(config, shutdown.clone()).await?;
    let addr = running.grpc_addr.to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!etl_service::probe_health(&addr).await?);
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running.wait()).await??;
    Ok(())
}

#[tokio::test]
async fn health_serves_and_the_server_stops_on_shutdown() -> TestResult {
    let h = start("review", true, NO_POLL).await?;
    let addr = h.grpc_addr.to_string();
    assert!(etl_service::probe_health(&addr).await?);
    drop(h);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(etl_service::probe_health(&addr).await.is_err());
    Ok(())
}

/// The read-back statement is prepared once per connection; a column whose
/// type changed after that fails it ("cached plan must not change result
/// type"). The check that meets it prepares again at once: the file is
/// verified on its NOTIFY, not on the next poll.
#[tokio::test]
async fn a_column_retyped_between_checks_does_not_hold_the_next_one_back() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let run = "run-retyped";
    let (first, second) = (
        "run-retyped__a__chunk_000001.csv",
        "run-retyped__a__chunk_000002.csv",
    );
    let (rows1, rows2) = (review_rows(first, 2), review_rows(second, 3));
    h.register(manifest(run, first, &REVIEW_COLUMNS, &rows1))
        .await?;
    h.register(manifest(run, second, &REVIEW_COLUMNS, &rows2))
        .await?;
    h.insert_reviews(first, &numbered(&rows1), true).await?;
    h.watch_until(run, WAIT, |r| r.files_verified == 1).await?;
    h.db.batch_execute("ALTER TABLE review ALTER COLUMN header TYPE varchar(200)")
        .await?;
    h.insert_reviews(second, &numbered(&rows2), true).await?;
    let report = h.watch_until(run, WAIT, |r| r.files_verified == 2).await?;
    assert_eq!(
        (report.rows_landed, report.missing, report.altered),
        (5, 0, 0)
    );
    Ok(())
}

#[tokio::test]
async fn a_manifest_column_missing_from_the_table_alters_every_row() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-nocol", "run-nocol__a__chunk_000001.csv");
    let rows = review_rows(file, 2);
    let mut columns = REVIEW_COLUMNS.to_vec();
    columns.push("rating");
    let with_rating: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.push("5".into());
            r
        })
        .collect();
    h.register(manifest(run, file, &columns, &with_rating))
        .await?;
    h.insert_reviews(file, &numbered(&rows), true).await?;
    let report = h.watch_until(run, WAIT, |r| r.rows_landed == 2).await?;
    assert_eq!((report.altered, report.missing), (2, 0));
    Ok(())
}

/// Postgres goes away and comes back: health follows it, a registration while
/// it is away is refused as UNAVAILABLE (the manifest could not be stored, so
/// the extractor must retry), and a file whose rows landed meanwhile is
/// verified after the reconnect.
#[tokio::test]
async fn the_verifier_reconnects_after_postgres_restarts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = testkit::free_port();
    let start_cluster = {
        let dir = dir.path().to_path_buf();
        move || {
            testkit::PgCluster::builder()
                .dir(dir)
                .port(port)
                .fsync(false)
                .start()
        }
    };
    let mut cluster = tokio::task::spawn_blocking(start_cluster.clone()).await??;
    let url = cluster.create_database("nlp_db").await?;
    {
        let db = cluster.connect("nlp_db").await?;
        db.batch_execute(crate::helpers::REVIEW_DDL).await?;
    }
    let mut config = sink_verifier::Config::new("127.0.0.1:0", &url);
    config.poll_interval_ms = NO_POLL;
    let shutdown = etl_service::Shutdown::new();
    let running = sink_verifier::start(config, shutdown.clone()).await?;
    let addr = running.grpc_addr.to_string();
    let _stop = StopOnDrop(shutdown.clone());
    wait_health(&addr, true).await?;

    let mut grpc =
        etl_proto::v1::sink_verifier_client::SinkVerifierClient::connect(format!("http://{addr}"))
            .await?;
    let (run, file) = ("run-restart", "run-restart__a__chunk_000001.csv");
    let rows = review_rows(file, 3);
    grpc.register_file(RegisterFileRequest {
        manifest: Some(manifest(run, file, &REVIEW_COLUMNS, &rows)),
    })
    .await?;

    cluster = tokio::task::spawn_blocking(move || cluster.stop().map(|()| cluster)).await??;
    wait_health(&addr, false).await?;

    let late = "run-restart__a__chunk_000002.csv";
    let late_rows = review_rows(late, 2);
    let refused = grpc
        .register_file(RegisterFileRequest {
            manifest: Some(manifest(run, late, &REVIEW_COLUMNS, &late_rows)),
        })
        .await
        .err()
        .ok_or("a manifest was accepted while Postgres, where it is kept, was down")?;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    drop(cluster);
    let cluster = tokio::task::spawn_blocking(start_cluster).await??;
    // The rows land while the verifier may still be reconnecting: the NOTIFY is
    // lost when it comes before LISTEN, but then the check after reconnecting
    // sees the rows.
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let tx = client.transaction().await?;
    for (row, f) in numbered(&rows) {
        tx.execute(
            "INSERT INTO review (header, body, feedback_type, source, is_streaming, \
             language_code, _etl_file, _etl_row) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &f[0],
                &f[1],
                &f[2],
                &f[3],
                &(f[4] == "true"),
                &f[5],
                &file,
                &row,
            ],
        )
        .await?;
    }
    tx.execute("SELECT pg_notify('etl_rows', $1)", &[&file])
        .await?;
    tx.commit().await?;
    wait_health(&addr, true).await?;
    // The extractor's retry of the refused registration now goes through.
    grpc.register_file(RegisterFileRequest {
        manifest: Some(manifest(run, late, &REVIEW_COLUMNS, &late_rows)),
    })
    .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = grpc
            .get_report(GetReportRequest { run_id: run.into() })
            .await?
            .into_inner();
        if report.files_verified == 1 {
            assert_eq!((report.files, report.rows_expected), (2, 5));
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not verified after the restart: {report:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(cluster);
    Ok(())
}

struct StopOnDrop(etl_service::Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

async fn wait_health(addr: &str, serving: bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if etl_service::probe_health(addr).await? == serving {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("health never became serving={serving}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
