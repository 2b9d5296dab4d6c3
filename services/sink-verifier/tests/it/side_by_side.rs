//! Two verifiers side by side on one database (scale-out): either may be asked
//! about any run, whichever verifier the extractor registered its files with,
//! and both answer with the same figures; every row, duplicate and copy is
//! counted once.

use std::time::Duration;

use etl_proto::v1::RunReport;

use crate::{
    TestResult,
    helpers::{
        Error, Harness, REVIEW_COLUMNS, insert_reviews_together, manifest, numbered, poll_report,
        review_rows, start,
    },
};

/// Only NOTIFY and registrations drive the verifiers: no poll papers over a
/// disagreement between them.
const NO_POLL: u64 = 600_000;
const WAIT: Duration = Duration::from_secs(20);

/// Two verifiers on one fresh database with the `review` table.
async fn side_by_side() -> Result<(Harness, Harness), Error> {
    let a = start("review", true, NO_POLL).await?;
    let mut config = sink_verifier::Config::new("127.0.0.1:0", &a.url);
    config.poll_interval_ms = NO_POLL;
    let b = Harness::start_on(&a.url, false, config).await?;
    Ok((a, b))
}

/// GetReport of `run` from both verifiers, which must be the same.
async fn same_report(a: &mut Harness, b: &mut Harness, run: &str) -> Result<RunReport, Error> {
    let (from_a, from_b) = (a.report(run).await?, b.report(run).await?);
    if from_a != from_b {
        return Err(
            format!("the verifiers disagree on {run}:\n A: {from_a:?}\n B: {from_b:?}").into(),
        );
    }
    Ok(from_a)
}

/// Waits until both verifiers' GetReport of `run` satisfies `done`, then
/// returns it, the same from both.
async fn both_until(
    a: &mut Harness,
    b: &mut Harness,
    run: &str,
    done: impl Fn(&RunReport) -> bool + Copy,
) -> Result<RunReport, Error> {
    poll_report(&mut a.grpc, run, WAIT, done).await?;
    poll_report(&mut b.grpc, run, WAIT, done).await?;
    same_report(a, b, run).await
}

#[tokio::test]
async fn two_verifiers_side_by_side_agree_on_every_run_and_count_once() -> TestResult {
    let (mut a, mut b) = side_by_side().await?;

    // A clean run whose files were registered half with each verifier, and
    // completed through the one that did not register its first file.
    let run = "run-side";
    let files: Vec<String> = (1..=4)
        .map(|i| format!("{run}__a__chunk_{i:06}.csv"))
        .collect();
    let rows: Vec<_> = files
        .iter()
        .zip([5, 8, 3, 6])
        .map(|(f, n)| review_rows(f, n))
        .collect();
    for (i, (f, r)) in files.iter().zip(&rows).enumerate() {
        let m = manifest(run, f, &REVIEW_COLUMNS, r);
        if i % 2 == 0 {
            a.register(m).await?;
        } else {
            b.register(m).await?;
        }
    }
    // The extractor's retry of a registration may reach the other verifier.
    a.register(manifest(run, &files[1], &REVIEW_COLUMNS, &rows[1]))
        .await?;
    b.complete(run, 4).await?;
    // Before any row landed, each knows the whole run.
    let before = same_report(&mut a, &mut b, run).await?;
    assert_eq!(
        (before.files, before.rows_expected, before.missing),
        (4, 22, 22),
        "{before:?}"
    );
    assert_eq!((before.complete, before.state.as_str()), (false, "RUNNING"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    for (f, r) in files.iter().zip(&rows) {
        a.insert_reviews(f, &numbered(r), true).await?;
    }
    // Both watchers end with the same complete report, the one both then give.
    let (from_a, from_b) = tokio::join!(
        a.watch_until(run, WAIT, |r| r.complete),
        b.watch_until(run, WAIT, |r| r.complete)
    );
    let (from_a, from_b) = (from_a?, from_b?);
    assert_eq!(from_a, from_b);
    let done = same_report(&mut a, &mut b, run).await?;
    assert_eq!(done, from_a);
    assert_eq!(done.state, "PASSED", "{done:?}");
    assert_eq!((done.files, done.files_verified), (4, 4));
    assert_eq!((done.rows_expected, done.rows_landed), (22, 22));
    assert_eq!((done.missing, done.duplicates, done.altered), (0, 0, 0));
    assert_eq!((done.files_rejected, done.content_duplicates), (0, 0));
    assert!(
        done.file_reports
            .iter()
            .all(|f| f.verified && f.latency_ms > 0)
    );

    // A damaged run: a row lost, a row changed, a row written twice (under a
    // row number beyond the file's end). Each is counted once, by both.
    let run = "run-damaged";
    let files: Vec<String> = (1..=3)
        .map(|i| format!("{run}__a__chunk_{i:06}.csv"))
        .collect();
    let rows: Vec<_> = files.iter().map(|f| review_rows(f, 4)).collect();
    a.register(manifest(run, &files[0], &REVIEW_COLUMNS, &rows[0]))
        .await?;
    b.register(manifest(run, &files[1], &REVIEW_COLUMNS, &rows[1]))
        .await?;
    a.register(manifest(run, &files[2], &REVIEW_COLUMNS, &rows[2]))
        .await?;
    b.complete(run, 3).await?;
    let mut lost = numbered(&rows[1]);
    lost.remove(1);
    let mut damaged = numbered(&rows[2]);
    damaged[2].1[1].push_str(" (edited)");
    damaged.push((5, rows[2][0].clone()));
    b.insert_reviews(&files[0], &numbered(&rows[0]), true)
        .await?;
    b.insert_reviews(&files[1], &lost, true).await?;
    b.insert_reviews(&files[2], &damaged, true).await?;
    let report = both_until(&mut a, &mut b, run, |r| {
        r.rows_landed == 11 && r.altered == 1
    })
    .await?;
    assert_eq!(
        (report.missing, report.duplicates, report.altered),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!((report.files, report.files_verified), (3, 1));
    assert_eq!((report.complete, report.state.as_str()), (false, "RUNNING"));

    // A rerun under a new run id, each run registered with its own verifier,
    // the rows of both committed at once: each verifier proves its own file at
    // the same moment, and the copy must still be seen.
    let (first, rerun) = ("run-twin-1", "run-twin-2");
    let (x, y) = (
        "run-twin-1__a__chunk_000001.csv",
        "run-twin-2__a__chunk_000001.csv",
    );
    let rows = review_rows(x, 6);
    a.register(manifest(first, x, &REVIEW_COLUMNS, &rows))
        .await?;
    a.complete(first, 1).await?;
    b.register(manifest(rerun, y, &REVIEW_COLUMNS, &rows))
        .await?;
    b.complete(rerun, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let landed = numbered(&rows);
    insert_reviews_together(&mut a.db, &[(x, &landed), (y, &landed)]).await?;
    let mut named = Vec::new();
    for run in [first, rerun] {
        let report = both_until(&mut a, &mut b, run, |r| r.state == "FAILED").await?;
        assert!(report.complete, "{report:?}");
        assert_eq!((report.files_verified, report.rows_landed), (1, 6));
        assert_eq!(
            (report.missing, report.duplicates, report.altered),
            (0, 0, 0)
        );
        assert_eq!(report.content_duplicates, 6, "{report:?}");
        assert_eq!(report.overlapping_rows, 0, "{report:?}");
        let f = &report.file_reports[0];
        named.push((f.copy_of.clone(), f.copies.clone()));
    }
    // Whichever was proven second is the copy of the other, named on both sides.
    let (x, y) = (x.to_string(), y.to_string());
    assert!(
        named == [(vec![], vec![y.clone()]), (vec![x.clone()], vec![])]
            || named == [(vec![y], vec![]), (vec![], vec![x])],
        "{named:?}"
    );

    // Two runs whose files share rows without being copies (a bigger input
    // with a smaller one's start), proven at the same moment: overlapping
    // rows on both sides, and both runs pass.
    let (small, big) = ("run-overlap-1", "run-overlap-2");
    let (s, g) = (
        "run-overlap-1__a__chunk_000001.csv",
        "run-overlap-2__a__chunk_000001.csv",
    );
    let small_rows = review_rows(s, 3);
    let mut big_rows = small_rows.clone();
    big_rows.extend(review_rows(g, 2));
    a.register(manifest(small, s, &REVIEW_COLUMNS, &small_rows))
        .await?;
    a.complete(small, 1).await?;
    b.register(manifest(big, g, &REVIEW_COLUMNS, &big_rows))
        .await?;
    b.complete(big, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    insert_reviews_together(
        &mut a.db,
        &[(s, &numbered(&small_rows)), (g, &numbered(&big_rows))],
    )
    .await?;
    for run in [small, big] {
        let report = both_until(&mut a, &mut b, run, |r| r.complete).await?;
        assert_eq!(report.state, "PASSED", "{report:?}");
        assert_eq!(
            (report.overlapping_rows, report.content_duplicates),
            (3, 0),
            "{report:?}"
        );
    }

    // Nothing was stored twice.
    let stored =
        a.db.query_one(
            "SELECT (SELECT count(*) FROM etl_verifier.runs), \
                    (SELECT count(*) FROM etl_verifier.files), \
                    (SELECT sum(rows_landed)::bigint FROM etl_verifier.files), \
                    (SELECT sum(cardinality(digests))::bigint FROM etl_verifier.file_digests), \
                    (SELECT count(*) FROM etl_verifier.twinned_rows), \
                    (SELECT sum(rows_twinned)::bigint FROM etl_verifier.twinned_counts), \
                    (SELECT count(*) FROM etl_verifier.content_matches), \
                    (SELECT count(*) FROM etl_verifier.copies)",
            &[],
        )
        .await?;
    let counts: Vec<i64> = (0..8).map(|i| stored.get(i)).collect();
    // Runs; files 4 + 3 + 1 + 1 + 1 + 1; rows landed 22 + 11 + 6 + 6 + 3 + 5;
    // digests 22 + 12 + 6 + 6 + 3 + 5; twinned rows: each twin's 6 and the 3
    // shared rows on each side, counted as often; the copy's rows matched by
    // name to its original's, both ways; one copy.
    assert_eq!(counts, [6, 11, 53, 54, 18, 18, 12, 1]);
    let runs =
        a.db.query(
            "SELECT run_id, state, finished_at IS NOT NULL FROM etl_verifier.runs \
             ORDER BY run_id",
            &[],
        )
        .await?;
    let runs: Vec<(String, String, bool)> = runs
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expect = |id: &str, state: &str, finished| (id.to_string(), state.to_string(), finished);
    assert_eq!(
        runs,
        [
            expect("run-damaged", "RUNNING", false),
            expect("run-overlap-1", "PASSED", true),
            expect("run-overlap-2", "PASSED", true),
            expect("run-side", "PASSED", true),
            expect("run-twin-1", "FAILED", true),
            expect("run-twin-2", "FAILED", true),
        ]
    );
    Ok(())
}
