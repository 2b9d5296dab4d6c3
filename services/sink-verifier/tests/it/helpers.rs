//! A verifier in front of a fresh database, and the sink's side of the contract:
//! the `review` table and transactional inserts with `pg_notify('etl_rows', file)`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etl_core::digest::{file_checksum, row_digest};
use etl_proto::v1::{
    CompleteRunRequest, FileManifest, GetReportRequest, RegisterFileRequest, RunReport,
    sink_verifier_client::SinkVerifierClient,
};
use etl_service::Shutdown;
use tokio_postgres::Client;
use tonic::transport::Channel;

pub(crate) type Error = Box<dyn std::error::Error>;

/// The `review` table exactly as the sink creates it.
pub(crate) const REVIEW_DDL: &str = "CREATE TABLE review (
    header text, body text, feedback_type text, source text, is_streaming boolean,
    language_code text,
    _etl_file text NOT NULL, _etl_row bigint NOT NULL, _etl_trace_id text,
    _etl_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (_etl_file, _etl_row))";

pub(crate) const REVIEW_COLUMNS: [&str; 6] = [
    "header",
    "body",
    "feedback_type",
    "source",
    "is_streaming",
    "language_code",
];

pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

pub(crate) struct Harness {
    pub(crate) db: Client,
    pub(crate) grpc: SinkVerifierClient<Channel>,
    pub(crate) grpc_addr: std::net::SocketAddr,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A fresh database (with the `review` table when `create_review`) and a
/// verifier watching `table` in it.
pub(crate) async fn start(
    table: &str,
    create_review: bool,
    poll_interval_ms: u64,
) -> Result<Harness, Error> {
    etl_telemetry::init_for_tests();
    let url = testkit::shared_postgres()?
        .create_unique_database("verifier")
        .await?;
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    if create_review {
        db.batch_execute(REVIEW_DDL).await?;
    }
    let mut config = sink_verifier::Config::new("127.0.0.1:0", &url);
    config.table = table.to_string();
    config.poll_interval_ms = poll_interval_ms;
    let shutdown = Shutdown::new();
    let running = sink_verifier::start(config, shutdown.clone()).await?;
    let grpc_addr = running.grpc_addr;
    tokio::spawn(running.wait());
    let grpc = SinkVerifierClient::connect(format!("http://{grpc_addr}")).await?;
    wait_serving(grpc_addr).await?;
    Ok(Harness {
        db,
        grpc,
        grpc_addr,
        shutdown,
    })
}

async fn wait_serving(addr: std::net::SocketAddr) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if etl_service::probe_health(&addr.to_string()).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("verifier never became SERVING".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Rows of a review chunk, as written in the file.
pub(crate) fn review_rows(file: &str, n: usize) -> Vec<Vec<String>> {
    (1..=n)
        .map(|i| {
            vec![
                format!("title {i} of {file}"),
                format!("body {i}\twith a tab and \"quotes\""),
                if i % 2 == 0 { "positive" } else { "negative" }.to_string(),
                "amazon".to_string(),
                (i % 3 == 0).to_string(),
                "en".to_string(),
            ]
        })
        .collect()
}

/// The manifest the extractor would register for `rows`.
pub(crate) fn manifest(
    run: &str,
    file: &str,
    columns: &[&str],
    rows: &[Vec<String>],
) -> FileManifest {
    let row_digests: Vec<u64> = rows.iter().map(|r| row_digest(r)).collect();
    FileManifest {
        run_id: run.to_string(),
        file_name: file.to_string(),
        row_count: rows.len() as u64,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        checksum: file_checksum(&row_digests),
        row_digests,
        uploaded_at_unix_ms: now_ms(),
        trace_id: TRACE_ID.to_string(),
        traceparent: String::new(),
    }
}

impl Harness {
    pub(crate) async fn register(&mut self, m: FileManifest) -> Result<(), Error> {
        self.grpc
            .register_file(RegisterFileRequest { manifest: Some(m) })
            .await?;
        Ok(())
    }

    pub(crate) async fn complete(&mut self, run: &str, files: u64) -> Result<(), Error> {
        self.grpc
            .complete_run(CompleteRunRequest {
                run_id: run.to_string(),
                files,
            })
            .await?;
        Ok(())
    }

    pub(crate) async fn report(&mut self, run: &str) -> Result<RunReport, Error> {
        Ok(self
            .grpc
            .get_report(GetReportRequest {
                run_id: run.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Inserts `(row number, fields)` of `file` into `review` the way the sink
    /// does: one transaction, with the NOTIFY inside it when `notify`.
    pub(crate) async fn insert_reviews(
        &mut self,
        file: &str,
        rows: &[(i64, Vec<String>)],
        notify: bool,
    ) -> Result<(), Error> {
        let tx = self.db.transaction().await?;
        for (row, f) in rows {
            let is_streaming: Option<bool> = match f[4].as_str() {
                "" => None,
                s => Some(s.parse()?),
            };
            tx.execute(
                "INSERT INTO review (header, body, feedback_type, source, is_streaming, \
                 language_code, _etl_file, _etl_row, _etl_trace_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &f[0],
                    &f[1],
                    &f[2],
                    &f[3],
                    &is_streaming,
                    &f[5],
                    &file,
                    row,
                    &TRACE_ID,
                ],
            )
            .await?;
        }
        if notify {
            tx.execute("SELECT pg_notify('etl_rows', $1)", &[&file])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Follows WatchReport until `done` holds, failing after `timeout` or when
    /// the stream ends first. Returns the report that satisfied `done`.
    pub(crate) async fn watch_until(
        &mut self,
        run: &str,
        timeout: Duration,
        done: impl Fn(&RunReport) -> bool,
    ) -> Result<RunReport, Error> {
        let mut stream = self
            .grpc
            .watch_report(GetReportRequest {
                run_id: run.to_string(),
            })
            .await?
            .into_inner();
        let mut last = None;
        let found = tokio::time::timeout(timeout, async {
            while let Some(report) = stream.message().await? {
                if done(&report) {
                    return Ok::<_, Error>(Some(report));
                }
                last = Some(report);
            }
            Ok(None)
        })
        .await;
        match found {
            Ok(Ok(Some(report))) => Ok(report),
            Ok(Ok(None)) => Err(format!("WatchReport ended first; last report: {last:?}").into()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("timed out after {timeout:?}; last report: {last:?}").into()),
        }
    }
}

/// Numbers rows from 1.
pub(crate) fn numbered(rows: &[Vec<String>]) -> Vec<(i64, Vec<String>)> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| (i as i64 + 1, r.clone()))
        .collect()
}
