//! The verifier's state lives in Postgres: a verifier killed with SIGKILL mid-run
//! and started again resumes the run and completes it with the right counts; a
//! finished run leaves memory and is read back from the store; two verifiers on
//! one database agree and never count twice.

use std::time::Duration;

use etl_proto::v1::{CompleteRunRequest, GetReportRequest, RegisterFileRequest};

use crate::{
    TestResult,
    helpers::{
        Harness, REVIEW_COLUMNS, REVIEW_DDL, VerifierProcess, connect, fresh_database,
        insert_reviews, manifest, numbered, poll_report, review_rows, start,
    },
};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_verifier_killed_mid_run_resumes_after_a_restart() -> TestResult {
    let url = fresh_database().await?;
    let mut db = connect(&url).await?;
    db.batch_execute(REVIEW_DDL).await?;
    let run = "run-kill";
    let files = [
        "run-kill__a__chunk_000001.csv",
        "run-kill__a__chunk_000002.csv",
        "run-kill__a__chunk_000003.csv",
    ];
    let rows: Vec<_> = files
        .iter()
        .zip([10, 20, 5])
        .map(|(f, n)| review_rows(f, n))
        .collect();
    let manifests: Vec<_> = files
        .iter()
        .zip(&rows)
        .map(|(f, r)| manifest(run, f, &REVIEW_COLUMNS, r))
        .collect();

    let mut first = VerifierProcess::spawn(&url, 200).await?;
    let mut grpc = first.client().await?;
    for m in &manifests[..2] {
        grpc.register_file(RegisterFileRequest {
            manifest: Some(m.clone()),
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    insert_reviews(&mut db, files[0], &numbered(&rows[0]), true, Duration::ZERO).await?;
    let before = poll_report(&mut grpc, run, WAIT, |r| r.files_verified == 1).await?;
    let latency_before = before.file_reports[0].latency_ms;
    assert!(latency_before > 0, "{before:?}");

    first.kill_9()?;
    // Rows land while no verifier is running: their NOTIFY reaches no one.
    insert_reviews(&mut db, files[1], &numbered(&rows[1]), true, Duration::ZERO).await?;

    let second = VerifierProcess::spawn(&url, 200).await?;
    // Before anyone asks it anything, the new verifier has reloaded the run and
    // verified the file whose rows landed while it was down.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !db
        .query_one(
            "SELECT verified FROM etl_verifier.files WHERE file_name = $1",
            &[&files[1]],
        )
        .await?
        .get::<_, bool>(0)
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the restarted verifier did not resume the run on its own".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut grpc = second.client().await?;
    let resumed = grpc
        .get_report(GetReportRequest { run_id: run.into() })
        .await?
        .into_inner();
    assert_eq!(
        (resumed.files, resumed.rows_expected),
        (2, 30),
        "{resumed:?}"
    );
    assert_eq!(resumed.file_reports[0].latency_ms, latency_before);
    // The extractor retries a registration it is unsure of: still fine.
    grpc.register_file(RegisterFileRequest {
        manifest: Some(manifests[1].clone()),
    })
    .await?;
    grpc.register_file(RegisterFileRequest {
        manifest: Some(manifests[2].clone()),
    })
    .await?;
    grpc.complete_run(CompleteRunRequest {
        run_id: run.into(),
        files: 3,
    })
    .await?;
    insert_reviews(&mut db, files[2], &numbered(&rows[2]), true, Duration::ZERO).await?;
    let report = poll_report(&mut grpc, run, WAIT, |r| r.complete).await?;
    assert_eq!((report.files, report.files_verified), (3, 3));
    assert_eq!((report.rows_expected, report.rows_landed), (35, 35));
    assert_eq!(
        (report.missing, report.duplicates, report.altered),
        (0, 0, 0)
    );
    assert_eq!(report.state, "PASSED");
    assert_eq!(report.file_reports[0].latency_ms, latency_before);
    assert!(report.file_reports.iter().all(|f| f.verified));
    let stored = db
        .query_one(
            "SELECT state, finished_at IS NOT NULL FROM etl_verifier.runs WHERE run_id = $1",
            &[&run],
        )
        .await?;
    assert_eq!(
        (stored.get::<_, String>(0), stored.get::<_, bool>(1)),
        ("PASSED".to_string(), true)
    );
    Ok(())
}

#[tokio::test]
async fn a_finished_run_is_read_back_from_the_store() -> TestResult {
    let mut h = start("review", true, 600_000).await?;
    let (run, file) = ("run-done", "run-done__a__chunk_000001.csv");
    let rows = review_rows(file, 4);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    h.complete(run, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(file, &numbered(&rows), true).await?;
    let done = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!(done.state, "PASSED");

    h.restart().await?;
    assert_eq!(h.report(run).await?, done);
    // WatchReport of a finished run: its report, then the end of the stream.
    let mut stream = h
        .grpc
        .watch_report(GetReportRequest { run_id: run.into() })
        .await?
        .into_inner();
    assert_eq!(stream.message().await?, Some(done.clone()));
    assert_eq!(stream.message().await?, None);
    // Completed and finished: the same count again is fine, another is not,
    // and no new file joins it.
    h.complete(run, 1).await?;
    let e = h
        .grpc
        .complete_run(CompleteRunRequest {
            run_id: run.into(),
            files: 2,
        })
        .await
        .err()
        .ok_or("a finished run took another file count")?;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let extra = "run-done__a__chunk_000002.csv";
    let e = h
        .grpc
        .register_file(RegisterFileRequest {
            manifest: Some(manifest(
                run,
                extra,
                &REVIEW_COLUMNS,
                &review_rows(extra, 1),
            )),
        })
        .await
        .err()
        .ok_or("a finished run took another file")?;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(h.report(run).await?, done);
    Ok(())
}

#[tokio::test]
async fn two_verifiers_on_one_database_agree_and_never_count_twice() -> TestResult {
    let mut one = start("review", true, 100).await?;
    let mut config = sink_verifier::Config::new("127.0.0.1:0", &one.url);
    config.poll_interval_ms = 100;
    let mut two = Harness::start_on(&one.url, false, config).await?;
    let run = "run-two";
    let files = [
        "run-two__a__chunk_000001.csv",
        "run-two__a__chunk_000002.csv",
    ];
    let rows: Vec<_> = files.iter().map(|f| review_rows(f, 7)).collect();
    one.register(manifest(run, files[0], &REVIEW_COLUMNS, &rows[0]))
        .await?;
    two.register(manifest(run, files[1], &REVIEW_COLUMNS, &rows[1]))
        .await?;
    // Each registered once; a retry through the other verifier changes nothing.
    two.register(manifest(run, files[0], &REVIEW_COLUMNS, &rows[0]))
        .await?;
    one.complete(run, 2).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    for (f, r) in files.iter().zip(&rows) {
        one.insert_reviews(f, &numbered(r), true).await?;
    }
    let a = poll_report(&mut one.grpc, run, WAIT, |r| r.complete).await?;
    let b = poll_report(&mut two.grpc, run, WAIT, |r| r.complete).await?;
    for r in [&a, &b] {
        assert_eq!((r.files, r.files_verified), (2, 2), "{r:?}");
        assert_eq!((r.rows_expected, r.rows_landed), (14, 14));
        assert_eq!((r.duplicates, r.state.as_str()), (0, "PASSED"));
    }
    assert_eq!(a, b);
    let stored = one
        .db
        .query_one(
            "SELECT count(*), sum(rows_landed)::bigint FROM etl_verifier.files WHERE run_id = $1",
            &[&run],
        )
        .await?;
    assert_eq!((stored.get::<_, i64>(0), stored.get::<_, i64>(1)), (2, 14));
    Ok(())
}
