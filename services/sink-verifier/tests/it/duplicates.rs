//! Content duplicates: the same rows landed under two file names. The lineage
//! key cannot see them; the verifier compares row digests. A file holding
//! exactly another landed file's rows (of another run) is a copy and fails
//! both runs; rows shared by files that are not copies are overlapping rows,
//! reported without failing anything.

use std::time::Duration;

use etl_proto::v1::FileManifest;
use tokio_postgres::Client;

use crate::{
    TestResult,
    helpers::{REVIEW_COLUMNS, manifest, numbered, poll_report, review_rows, start},
};

const NO_POLL: u64 = 600_000;
const WAIT: Duration = Duration::from_secs(20);

/// A landed file uploaded again under a new name (nobody registers the copy):
/// its rows arrive through the sink's NOTIFY for a file the verifier does not
/// know, and turn the original's finished run FAILED.
#[tokio::test]
async fn a_copy_under_a_new_name_fails_the_run_of_the_original() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-orig", "run-orig__a__chunk_000001.csv");
    let rows = review_rows(file, 6);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    h.complete(run, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(file, &numbered(&rows), true).await?;
    let passed = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!(
        (passed.state.as_str(), passed.content_duplicates),
        ("PASSED", 0)
    );

    h.insert_reviews("copy of a.csv", &numbered(&rows), true)
        .await?;
    let failed = poll_report(&mut h.grpc, run, WAIT, |r| r.state == "FAILED").await?;
    assert!(failed.complete);
    assert_eq!(failed.content_duplicates, 6);
    assert_eq!(failed.file_reports[0].content_duplicates, 6);
    // The report names the copy.
    assert_eq!(failed.file_reports[0].copies, ["copy of a.csv"]);
    assert_eq!(failed.overlapping_rows, 0);
    // The file itself still landed once and unaltered.
    assert!(failed.file_reports[0].verified);
    assert_eq!(
        (failed.missing, failed.duplicates, failed.altered),
        (0, 0, 0)
    );
    // A second, partial copy adds nothing for rows already known as copied
    // (rows are counted, not copies), and a copy's replay counts nothing again.
    h.insert_reviews("partial copy.csv", &numbered(&rows[..2]), true)
        .await?;
    h.insert_reviews("copy of a.csv", &[], true).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = h.report(run).await?;
    assert_eq!((report.content_duplicates, report.overlapping_rows), (6, 0));
    // The partial copy holds two of its rows, not all: it is no copy.
    assert_eq!(report.file_reports[0].copies, ["copy of a.csv"]);
    assert_eq!(h.stored_state(run).await?, "FAILED");
    Ok(())
}

/// The same rows registered again in another run (a rerun under a new run id)
/// make a copy, which fails both runs; the same line twice within one run's
/// input is not a duplicate, even when the second file's rows landed before it
/// was registered, and a line of a copied file that another file of the
/// original's run also holds is an overlapping row there.
#[tokio::test]
async fn a_rerun_under_a_new_run_id_is_caught_and_a_line_repeated_in_one_run_is_not() -> TestResult
{
    let mut h = start("review", true, NO_POLL).await?;
    let first = "run-first";
    let (a1, a2) = (
        "run-first__a__chunk_000001.csv",
        "run-first__a__chunk_000002.csv",
    );
    let a1_rows = review_rows(a1, 4);
    // The input repeats A1's first line in the second chunk.
    let mut a2_rows = review_rows(a2, 3);
    a2_rows.push(a1_rows[0].clone());
    h.register(manifest(first, a1, &REVIEW_COLUMNS, &a1_rows))
        .await?;
    h.complete(first, 2).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(a1, &numbered(&a1_rows), true).await?;
    // A2's rows land before its manifest: for a moment it is a file nobody
    // registered whose row 4 copies A1's row 1.
    h.insert_reviews(a2, &numbered(&a2_rows), true).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    h.register(manifest(first, a2, &REVIEW_COLUMNS, &a2_rows))
        .await?;
    let report = h.watch_until(first, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");
    assert_eq!(report.content_duplicates, 0);

    // A rerun under a new run id loads A1's rows again under a new name.
    let rerun = "run-rerun";
    let b = "run-rerun__a__chunk_000001.csv";
    h.register(manifest(rerun, b, &REVIEW_COLUMNS, &a1_rows))
        .await?;
    h.complete(rerun, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(b, &numbered(&a1_rows), true).await?;
    let report = h.watch_until(rerun, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "FAILED");
    // B's 4 rows, row 1 of them with twins in both A1 and A2: counted once,
    // as rows of a copy.
    assert_eq!(report.content_duplicates, 4);
    assert_eq!(report.overlapping_rows, 0);
    assert_eq!(report.file_reports[0].copy_of, [a1]);
    assert_eq!((report.files_verified, report.missing), (1, 0));

    let report = poll_report(&mut h.grpc, first, WAIT, |r| r.state == "FAILED").await?;
    let by_name = |name: &str| {
        report
            .file_reports
            .iter()
            .find(|f| f.file_name == name)
            .map(|f| (f.content_duplicates, f.overlapping_rows, f.copies.clone()))
    };
    assert_eq!(by_name(a1), Some((4, 0, vec![b.to_string()])));
    assert_eq!(by_name(a2), Some((0, 1, vec![])));
    assert_eq!((report.content_duplicates, report.overlapping_rows), (4, 1));
    Ok(())
}

/// A bigger input that starts with a smaller one's rows (the demo generator
/// with the same seed), and the same review in two datasets: overlapping rows,
/// reported on both sides, while both runs pass. Neither file copies the other,
/// and a file holding one line twice is no copy of a file holding it once.
#[tokio::test]
async fn overlapping_rows_are_reported_and_both_runs_pass() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (small, big) = ("run-small", "run-big");
    let s = "run-small__demo__chunk_000000.csv";
    let g = "run-big__demo__chunk_000000.csv";
    let small_rows = review_rows("demo", 4);
    // The bigger input: the smaller one's rows, one of them again (the
    // generator's sentence pool repeats itself), and more.
    let mut big_rows = small_rows.clone();
    big_rows.push(small_rows[2].clone());
    big_rows.extend(review_rows("more", 3));
    h.register(manifest(small, s, &REVIEW_COLUMNS, &small_rows))
        .await?;
    h.complete(small, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(s, &numbered(&small_rows), true).await?;
    let report = h.watch_until(small, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");

    h.register(manifest(big, g, &REVIEW_COLUMNS, &big_rows))
        .await?;
    h.complete(big, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(g, &numbered(&big_rows), true).await?;
    let report = h.watch_until(big, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");
    assert_eq!(
        (report.overlapping_rows, report.content_duplicates),
        (5, 0),
        "{report:?}"
    );
    let file = &report.file_reports[0];
    assert!(
        file.copy_of.is_empty() && file.copies.is_empty(),
        "{file:?}"
    );

    let report = h.report(small).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");
    assert_eq!((report.overlapping_rows, report.content_duplicates), (4, 0));

    // The same rows as the small file, but one of them twice: no copy either.
    let twice = "run-twice";
    let t = "run-twice__demo__chunk_000000.csv";
    let mut twice_rows = small_rows.clone();
    twice_rows.push(small_rows[0].clone());
    h.register(manifest(twice, t, &REVIEW_COLUMNS, &twice_rows))
        .await?;
    h.complete(twice, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(t, &numbered(&twice_rows), true).await?;
    let report = h.watch_until(twice, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");
    assert_eq!((report.overlapping_rows, report.content_duplicates), (5, 0));
    assert_eq!(h.stored_state(small).await?, "PASSED");
    Ok(())
}

/// The demo generator's sentence pool shares rows between every file of two
/// runs: a later run's file first-twins rows spread over several files of an
/// earlier run, one line of which that run holds twice, in two files. Each of
/// those rows is twinned once, in the file that holds it, and a file of the
/// earlier run sharing nothing stays without overlap.
#[tokio::test]
async fn first_twins_spread_over_the_earlier_runs_files_are_each_found() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let pool = review_rows("pool", 6);
    let own = review_rows("own", 3);
    let (early, late) = ("run-early", "run-late");
    let file = |run: &str, n: usize| format!("{run}__demo__chunk_{n:06}.csv");
    // run-early: pool rows 0..3 in its first file, rows 3 and 0 again (the
    // line twice in one run) and 4 in its second, and a third file of its own.
    let early_files = [
        vec![pool[0].clone(), pool[1].clone(), pool[2].clone()],
        vec![pool[3].clone(), pool[0].clone(), pool[4].clone()],
        own.clone(),
    ];
    // run-late: one file with pool rows 0, 3, 4 and 5 (5 is new).
    let late_rows = vec![
        pool[0].clone(),
        pool[3].clone(),
        pool[4].clone(),
        pool[5].clone(),
    ];
    for (n, rows) in early_files.iter().enumerate() {
        h.register(manifest(early, &file(early, n), &REVIEW_COLUMNS, rows))
            .await?;
    }
    h.complete(early, early_files.len() as u64).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    for (n, rows) in early_files.iter().enumerate() {
        h.insert_reviews(&file(early, n), &numbered(rows), true)
            .await?;
    }
    let report = h.watch_until(early, WAIT, |r| r.complete).await?;
    assert_eq!(
        (report.state.as_str(), report.overlapping_rows),
        ("PASSED", 0),
        "a line twice within one run is no overlap: {report:?}"
    );

    h.register(manifest(late, &file(late, 0), &REVIEW_COLUMNS, &late_rows))
        .await?;
    h.complete(late, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(&file(late, 0), &numbered(&late_rows), true)
        .await?;
    let report = h.watch_until(late, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");
    assert_eq!(report.overlapping_rows, 3, "{report:?}");

    // Rows 1 of the first file, 1 and 2 and 3 of the second (pool rows 0
    // twice, 3 and 4), nothing of the third.
    let report = h.report(early).await?;
    assert_eq!(report.state, "PASSED", "{report:?}");
    let per_file: Vec<(String, u64)> = report
        .file_reports
        .iter()
        .map(|f| (f.file_name.clone(), f.overlapping_rows))
        .collect();
    assert_eq!(
        per_file,
        [
            (file(early, 0), 1),
            (file(early, 1), 3),
            (file(early, 2), 0)
        ],
        "{report:?}"
    );
    assert_eq!(report.overlapping_rows, 4, "{report:?}");
    Ok(())
}

/// A file nobody registered is read again at each NOTIFY: while it holds
/// exactly a registered file's rows it is that file's copy (and fails the
/// original's run); once more rows landed under it, it is not, and the rows it
/// shares are overlapping rows.
#[tokio::test]
async fn an_unregistered_file_is_a_copy_only_while_it_holds_exactly_the_rows() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    let (run, file) = ("run-orig", "run-orig__a__chunk_000001.csv");
    let rows = review_rows(file, 5);
    h.register(manifest(run, file, &REVIEW_COLUMNS, &rows))
        .await?;
    h.complete(run, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(file, &numbered(&rows), true).await?;
    let passed = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!(passed.state, "PASSED");

    // Its first rows land: a copy as far as anyone can tell.
    let other = "appended.csv";
    h.insert_reviews(other, &numbered(&rows), true).await?;
    let failed = poll_report(&mut h.grpc, run, WAIT, |r| r.state == "FAILED").await?;
    assert_eq!(failed.file_reports[0].copies, [other]);
    // More rows land under it: it was a bigger file, overlapping.
    h.insert_reviews(other, &[(6, review_rows("extra", 1).remove(0))], true)
        .await?;
    let report = poll_report(&mut h.grpc, run, WAIT, |r| r.state == "PASSED").await?;
    assert!(report.file_reports[0].copies.is_empty(), "{report:?}");
    assert_eq!((report.overlapping_rows, report.content_duplicates), (5, 0));
    assert_eq!(h.stored_state(run).await?, "PASSED");
    Ok(())
}

/// Stores `m` as verified, with its digests, the way a verifier did before
/// `digest_runs` (rows landed, the run finished with `state`).
async fn store_old_verified(db: &Client, m: &FileManifest, state: &str) -> TestResult {
    let digests: Vec<i64> = m.row_digests.iter().map(|&d| d as i64).collect();
    let rows = m.row_count as i64;
    db.execute(
        "INSERT INTO etl_verifier.runs (run_id, expected_files, finished_at, state) \
         VALUES ($1, 1, now(), $2)",
        &[&m.run_id, &state],
    )
    .await?;
    db.execute(
        "INSERT INTO etl_verifier.files (file_name, run_id, row_count, columns, checksum, \
         uploaded_at_unix_ms, trace_id, traceparent, checked_at, rows_landed, verified, \
         committed_at_unix_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, '', now(), $3, true, $6)",
        &[
            &m.file_name,
            &m.run_id,
            &rows,
            &m.columns,
            &(m.checksum as i64),
            &m.uploaded_at_unix_ms,
            &m.trace_id,
        ],
    )
    .await?;
    db.execute(
        "INSERT INTO etl_verifier.row_digests (file_name, row_no, digest) \
         SELECT $1, g.n, g.d FROM unnest($2::bigint[]) WITH ORDINALITY AS g(d, n)",
        &[&m.file_name, &digests],
    )
    .await?;
    Ok(())
}

/// Rows `rows` of `file` matched with `twin`, as the verifier before
/// `twinned_rows` stored every match.
async fn store_old_matches(db: &Client, file: &str, rows: &[i64], twin: &str) -> TestResult {
    db.execute(
        "INSERT INTO etl_verifier.content_matches (file_name, row_no, twin_file) \
         SELECT $1, r, $3 FROM unnest($2::bigint[]) AS r",
        &[&file, &rows, &twin],
    )
    .await?;
    Ok(())
}

/// A store written by a verifier that kept every matched pair of rows (before
/// `digest_runs`, `twinned_rows` and the files' fingerprints) is upgraded in
/// place when a new verifier connects: the finished runs keep their figures,
/// and new runs are compared with their files as with any other.
#[tokio::test]
async fn a_store_of_an_older_verifier_is_upgraded_and_keeps_its_figures() -> TestResult {
    let mut h = start("review", true, NO_POLL).await?;
    h.stop().await?;
    // Back to the older layout: the same tables without what came after.
    h.db.batch_execute(
        "DROP TABLE etl_verifier.column_lists, etl_verifier.digest_runs, \
             etl_verifier.twinned_rows, etl_verifier.twinned_counts, \
             etl_verifier.file_digests; \
         ALTER TABLE etl_verifier.files DROP COLUMN digest_sum; \
         CREATE TABLE etl_verifier.row_digests (file_name text NOT NULL, \
             row_no bigint NOT NULL, digest bigint NOT NULL, PRIMARY KEY (file_name, row_no)); \
         CREATE INDEX row_digests_digest ON etl_verifier.row_digests (digest);",
    )
    .await?;
    // What it stored: a smaller input and a bigger one that starts with its
    // rows (overlapping rows), a file and its copy (rerun under a new run id),
    // and a row of the original that a file nobody registered also holds.
    let small_rows = review_rows("demo", 4);
    let mut big_rows = small_rows.clone();
    big_rows.push(small_rows[2].clone());
    big_rows.extend(review_rows("more", 3));
    let orig_rows = review_rows("orig", 3);
    let small = manifest(
        "run-small",
        "run-small__a.csv",
        &REVIEW_COLUMNS,
        &small_rows,
    );
    let big = manifest("run-big", "run-big__a.csv", &REVIEW_COLUMNS, &big_rows);
    let orig = manifest("run-orig", "run-orig__a.csv", &REVIEW_COLUMNS, &orig_rows);
    let copy = manifest("run-copy", "run-copy__a.csv", &REVIEW_COLUMNS, &orig_rows);
    for (m, state) in [
        (&small, "PASSED"),
        (&big, "PASSED"),
        (&orig, "FAILED"),
        (&copy, "FAILED"),
    ] {
        store_old_verified(&h.db, m, state).await?;
    }
    let (s, g, o, c) = (
        small.file_name.as_str(),
        big.file_name.as_str(),
        orig.file_name.as_str(),
        copy.file_name.as_str(),
    );
    store_old_matches(&h.db, s, &[1, 2, 3, 4], g).await?;
    store_old_matches(&h.db, g, &[1, 2, 3, 4, 5], s).await?;
    store_old_matches(&h.db, o, &[1, 2, 3], c).await?;
    store_old_matches(&h.db, c, &[1, 2, 3], o).await?;
    store_old_matches(&h.db, o, &[1], "stray.csv").await?;
    h.db.execute(
        "INSERT INTO etl_verifier.copies (copy_file, original_file) VALUES ($1, $2)",
        &[&c, &o],
    )
    .await?;

    h.restart().await?;
    let figures = |r: &etl_proto::v1::RunReport| {
        let f = &r.file_reports[0];
        (
            r.state.clone(),
            f.content_duplicates,
            f.overlapping_rows,
            f.copy_of.clone(),
            f.copies.clone(),
        )
    };
    let none = Vec::<String>::new;
    let expect_old = [
        ("run-small", ("PASSED".to_string(), 0, 4, none(), none())),
        ("run-big", ("PASSED".to_string(), 0, 5, none(), none())),
        (
            "run-orig",
            ("FAILED".to_string(), 3, 0, none(), vec![c.to_string()]),
        ),
        (
            "run-copy",
            ("FAILED".to_string(), 3, 0, vec![o.to_string()], none()),
        ),
    ];
    for (run, expected) in &expect_old {
        assert_eq!(figures(&h.report(run).await?), *expected, "{run}");
    }
    // The pairs of registered files that are no copies became twinned rows;
    // the copy's and the unregistered file's matches keep their names.
    let stored =
        h.db.query_one(
            "SELECT (SELECT count(*) FROM etl_verifier.twinned_rows), \
                    (SELECT sum(rows_twinned)::bigint FROM etl_verifier.twinned_counts), \
                    (SELECT count(*) FROM etl_verifier.content_matches), \
                    (SELECT count(*) FROM etl_verifier.files WHERE digest_sum IS NULL), \
                    (SELECT sum(cardinality(digests))::bigint FROM etl_verifier.file_digests), \
                    (SELECT count(*) FROM pg_class \
                     WHERE oid = to_regclass('etl_verifier.row_digests'))",
            &[],
        )
        .await?;
    let counts: Vec<i64> = (0..6).map(|i| stored.get(i)).collect();
    // The row digests moved into one array per file (4 + 8 + 3 + 3), in row
    // order, and the table of one row per digest is gone.
    assert_eq!(counts, [9, 9, 7, 0, 18, 0]);
    let big_stored: Vec<i64> =
        h.db.query_one(
            "SELECT digests FROM etl_verifier.file_digests WHERE file_name = $1",
            &[&g],
        )
        .await?
        .get(0);
    let big_digests: Vec<i64> = big.row_digests.iter().map(|&d| d as i64).collect();
    assert_eq!(big_stored, big_digests);

    // A new run with the small input's rows, one of them twice: overlapping
    // rows, and the older runs' rows are not counted again.
    let twice = "run-twice";
    let t = "run-twice__a.csv";
    let mut twice_rows = small_rows.clone();
    twice_rows.push(small_rows[0].clone());
    h.register(manifest(twice, t, &REVIEW_COLUMNS, &twice_rows))
        .await?;
    h.complete(twice, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(t, &numbered(&twice_rows), true).await?;
    let report = h.watch_until(twice, WAIT, |r| r.complete).await?;
    assert_eq!(
        figures(&report),
        ("PASSED".to_string(), 0, 5, none(), none())
    );
    // A rerun of the original's rows: a copy of both files holding them,
    // found by the fingerprints the upgrade computed.
    let again = "run-again";
    let a = "run-again__a.csv";
    h.register(manifest(again, a, &REVIEW_COLUMNS, &orig_rows))
        .await?;
    h.complete(again, 1).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(a, &numbered(&orig_rows), true).await?;
    let report = h.watch_until(again, WAIT, |r| r.complete).await?;
    assert_eq!(
        figures(&report),
        (
            "FAILED".to_string(),
            3,
            0,
            vec![c.to_string(), o.to_string()],
            none()
        )
    );
    for (run, expected) in &expect_old[..2] {
        assert_eq!(figures(&h.report(run).await?), *expected, "{run}");
    }
    let report = h.report("run-orig").await?;
    assert_eq!(report.file_reports[0].copies, [a, c]);
    assert_eq!(report.file_reports[0].content_duplicates, 3);
    Ok(())
}
