//! A verifier in front of a fresh database, and the sink's side of the contract:
//! the `review` table and transactional inserts with `pg_notify('etl_rows', file)`.

use std::time::Duration;

use etl_core::digest::{file_checksum, row_digest};
use etl_proto::v1::{
    CompleteRunRequest, FileManifest, GetReportRequest, RegisterFileRequest, RunReport,
    sink_verifier_client::SinkVerifierClient,
};
use etl_service::Shutdown;
use tokio::task::JoinHandle;
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
    /// The database, for a second verifier or a restart.
    pub(crate) url: String,
    pub(crate) grpc: SinkVerifierClient<Channel>,
    pub(crate) grpc_addr: std::net::SocketAddr,
    config: sink_verifier::Config,
    shutdown: Shutdown,
    running: Option<JoinHandle<Result<(), sink_verifier::Error>>>,
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
    start_with(table, create_review, |c| {
        c.poll_interval_ms = poll_interval_ms
    })
    .await
}

/// A fresh database on the shared test cluster.
pub(crate) async fn fresh_database() -> Result<String, Error> {
    etl_telemetry::init_for_tests();
    Ok(testkit::shared_postgres()?
        .create_unique_database("verifier")
        .await?)
}

/// As [`start`], with the verifier's config adjusted by `adjust`.
pub(crate) async fn start_with(
    table: &str,
    create_review: bool,
    adjust: impl FnOnce(&mut sink_verifier::Config),
) -> Result<Harness, Error> {
    let url = fresh_database().await?;
    let mut config = sink_verifier::Config::new("127.0.0.1:0", &url);
    config.table = table.to_string();
    adjust(&mut config);
    Harness::start_on(&url, create_review, config).await
}

impl Harness {
    /// A verifier with `config` on the existing database `url`.
    pub(crate) async fn start_on(
        url: &str,
        create_review: bool,
        config: sink_verifier::Config,
    ) -> Result<Harness, Error> {
        let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        if create_review {
            db.batch_execute(REVIEW_DDL).await?;
        }
        let shutdown = Shutdown::new();
        let running = sink_verifier::start(config.clone(), shutdown.clone()).await?;
        let grpc_addr = running.grpc_addr;
        let running = tokio::spawn(running.wait());
        let grpc = SinkVerifierClient::connect(format!("http://{grpc_addr}")).await?;
        wait_serving(grpc_addr).await?;
        Ok(Harness {
            db,
            url: url.to_string(),
            grpc,
            grpc_addr,
            config,
            shutdown,
            running: Some(running),
        })
    }

    /// Stops the verifier (it forgets everything it held in memory) and starts
    /// a new one on the same database, as a supervisor would.
    pub(crate) async fn restart(&mut self) -> Result<(), Error> {
        self.stop().await?;
        self.shutdown = Shutdown::new();
        let running = sink_verifier::start(self.config.clone(), self.shutdown.clone()).await?;
        self.grpc_addr = running.grpc_addr;
        self.running = Some(tokio::spawn(running.wait()));
        self.grpc = SinkVerifierClient::connect(format!("http://{}", self.grpc_addr)).await?;
        wait_serving(self.grpc_addr).await?;
        Ok(())
    }

    /// Stops the verifier and waits until it has.
    pub(crate) async fn stop(&mut self) -> Result<(), Error> {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), running).await???;
        }
        Ok(())
    }
}

pub(crate) async fn wait_serving(addr: std::net::SocketAddr) -> Result<(), Error> {
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
    etl_core::time::now_unix_ms()
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

    /// The run's state as stored in `etl_verifier.runs` (decided at its end,
    /// and again when a copy is found later), not as a report recomputes it.
    pub(crate) async fn stored_state(&self, run: &str) -> Result<String, Error> {
        Ok(self
            .db
            .query_one(
                "SELECT state FROM etl_verifier.runs WHERE run_id = $1",
                &[&run],
            )
            .await?
            .get(0))
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
        insert_reviews(&mut self.db, file, rows, notify, Duration::ZERO).await
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

/// Asks GetReport until `done` holds, failing after `timeout`. For runs whose
/// report changes after they finished (WatchReport of a finished run gives one
/// report and ends).
pub(crate) async fn poll_report(
    grpc: &mut SinkVerifierClient<Channel>,
    run: &str,
    timeout: Duration,
    done: impl Fn(&RunReport) -> bool,
) -> Result<RunReport, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let report = grpc
            .get_report(GetReportRequest {
                run_id: run.to_string(),
            })
            .await?
            .into_inner();
        if done(&report) {
            return Ok(report);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?}; last report: {report:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The sink-verifier binary as a child process, so a test can kill -9 it.
pub(crate) struct VerifierProcess {
    child: std::process::Child,
    pub(crate) grpc_addr: std::net::SocketAddr,
}

impl VerifierProcess {
    pub(crate) async fn spawn(url: &str, poll_interval_ms: u64) -> Result<Self, Error> {
        let port = testkit::free_port();
        let log_path = testkit::test_log_dir()?.join(format!("sink-verifier-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sink-verifier"))
            .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
            .args(["--database-url", url])
            .args(["--poll-interval-ms", &poll_interval_ms.to_string()])
            .env_remove("ETL_GATEWAY_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut process = Self {
            child,
            grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = process.child.try_wait()? {
                return Err(format!(
                    "sink-verifier exited with {status}; see {}",
                    log_path.display()
                )
                .into());
            }
            if etl_service::probe_health(&process.grpc_addr.to_string())
                .await
                .unwrap_or(false)
            {
                return Ok(process);
            }
            if tokio::time::Instant::now() > deadline {
                let _ = process.child.kill();
                return Err(format!(
                    "sink-verifier never became SERVING; see {}",
                    log_path.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn client(&self) -> Result<SinkVerifierClient<Channel>, Error> {
        Ok(SinkVerifierClient::connect(format!("http://{}", self.grpc_addr)).await?)
    }

    /// SIGKILL: no shutdown, nothing flushed.
    pub(crate) fn kill_9(&mut self) -> Result<(), Error> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for VerifierProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Inserts `(row number, fields)` of `file` into `review` the way the sink
/// does: one transaction, with the NOTIFY inside it when `notify`, committed
/// `hold` after its first statement (a sink transaction takes time).
pub(crate) async fn insert_reviews(
    db: &mut Client,
    file: &str,
    rows: &[(i64, Vec<String>)],
    notify: bool,
    hold: Duration,
) -> Result<(), Error> {
    let tx = db.transaction().await?;
    insert_rows(&tx, file, rows).await?;
    tokio::time::sleep(hold).await;
    if notify {
        tx.execute("SELECT pg_notify('etl_rows', $1)", &[&file])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `(row number, fields)` of a file's rows, as [`numbered`] gives them.
pub(crate) type NumberedRows = [(i64, Vec<String>)];

/// Inserts the rows of several files in one transaction, with a NOTIFY for
/// each: they commit, and their NOTIFYs arrive, at the same instant.
pub(crate) async fn insert_reviews_together(
    db: &mut Client,
    files: &[(&str, &NumberedRows)],
) -> Result<(), Error> {
    let tx = db.transaction().await?;
    for (file, rows) in files {
        insert_rows(&tx, file, rows).await?;
        tx.execute("SELECT pg_notify('etl_rows', $1)", &[file])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    file: &str,
    rows: &[(i64, Vec<String>)],
) -> Result<(), Error> {
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
    Ok(())
}

/// A database client on `url`.
pub(crate) async fn connect(url: &str) -> Result<Client, Error> {
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(db)
}
