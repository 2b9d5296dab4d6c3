//! "Upload to committed" ends when the rows' transaction commits, not at
//! `_etl_loaded_at` (`now()`, the start of that transaction).

use std::time::Duration;

use crate::{
    TestResult,
    helpers::{
        Harness, REVIEW_COLUMNS, connect, insert_reviews, manifest, numbered, review_rows, start,
    },
};

const WAIT: Duration = Duration::from_secs(20);
/// How long the sink's transaction stays open after its first insert.
const HOLD: Duration = Duration::from_millis(400);

/// The file's last `_etl_loaded_at` minus its upload time: what the latency
/// used to be.
async fn loaded_at_latency_ms(
    db: &tokio_postgres::Client,
    file: &str,
    uploaded_at_unix_ms: i64,
) -> Result<i64, Box<dyn std::error::Error>> {
    let row = db
        .query_one(
            "SELECT (extract(epoch FROM max(_etl_loaded_at)) * 1000)::bigint FROM review \
             WHERE _etl_file = $1",
            &[&file],
        )
        .await?;
    Ok(row.get::<_, i64>(0) - uploaded_at_unix_ms)
}

/// Without commit timestamps (the shared cluster's default): the latency ends
/// when the file's NOTIFY, delivered at commit, arrives.
#[tokio::test]
async fn latency_ends_at_the_commit_seen_through_notify() -> TestResult {
    let mut h = start("review", true, 600_000).await?;
    let (run, file) = ("run-slow", "run-slow__a__chunk_000001.csv");
    let rows = review_rows(file, 5);
    let m = manifest(run, file, &REVIEW_COLUMNS, &rows);
    let uploaded = m.uploaded_at_unix_ms;
    h.register(m).await?;
    h.complete(run, 1).await?;
    insert_reviews(&mut h.db, file, &numbered(&rows), true, HOLD).await?;
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    let latency = report.file_reports[0].latency_ms;
    let hold = HOLD.as_millis() as u64;
    assert!(
        latency >= hold,
        "latency {latency} ms < the {hold} ms the transaction stayed open"
    );
    assert!(latency < hold + 5_000, "latency {latency} ms");
    // What `_etl_loaded_at` would have said: the transaction's start.
    let old = loaded_at_latency_ms(&h.db, file, uploaded).await?;
    assert!(
        old < hold as i64,
        "_etl_loaded_at was {old} ms after upload"
    );
    let l = report.latency.ok_or("no latency")?;
    assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (latency, latency, latency));
    Ok(())
}

/// With `track_commit_timestamp = on` the commit time is read from Postgres, so
/// even rows that committed while no verifier was running get their true
/// latency (a NOTIFY then reaches no one).
#[tokio::test]
async fn with_commit_timestamps_rows_landed_while_the_verifier_was_down_keep_their_latency()
-> TestResult {
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
    cluster
        .connect("postgres")
        .await?
        .batch_execute("ALTER SYSTEM SET track_commit_timestamp = on")
        .await?;
    // The setting needs a server restart.
    cluster = tokio::task::spawn_blocking(move || cluster.stop().map(|()| cluster)).await??;
    drop(cluster);
    let cluster = tokio::task::spawn_blocking(start_cluster).await??;

    let mut config = sink_verifier::Config::new("127.0.0.1:0", &url);
    config.poll_interval_ms = 200;
    let mut h = Harness::start_on(&url, true, config).await?;
    let (run, file) = ("run-ts", "run-ts__a__chunk_000001.csv");
    let rows = review_rows(file, 3);
    let m = manifest(run, file, &REVIEW_COLUMNS, &rows);
    let uploaded = m.uploaded_at_unix_ms;
    h.register(m).await?;
    h.complete(run, 1).await?;
    h.stop().await?;

    let mut db = connect(&url).await?;
    insert_reviews(&mut db, file, &numbered(&rows), true, HOLD).await?;
    h.restart().await?;
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    let latency = report.file_reports[0].latency_ms;
    let hold = HOLD.as_millis() as u64;
    assert!(
        latency >= hold,
        "latency {latency} ms < the {hold} ms the transaction stayed open"
    );
    let old = loaded_at_latency_ms(&db, file, uploaded).await?;
    assert!(
        old < hold as i64,
        "_etl_loaded_at was {old} ms after upload"
    );
    // And it is exactly what Postgres recorded as the commit.
    let committed: i64 = db
        .query_one(
            "SELECT (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000)::bigint \
             FROM review WHERE _etl_file = $1",
            &[&file],
        )
        .await?
        .get(0);
    assert!(
        (latency as i64 - (committed - uploaded)).abs() <= 1,
        "latency {latency} ms, commit at +{} ms",
        committed - uploaded
    );
    drop(h);
    drop(cluster);
    Ok(())
}
