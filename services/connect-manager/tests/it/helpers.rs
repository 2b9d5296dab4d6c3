//! Test helpers: a whole stack per test — a database of the shared Postgres, a
//! topic name on the shared tansu, our sftp-gateway and connect-manager
//! in-process on port 0 — and bounded waits.

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use connect_manager::{Config, Running};
use etl_proto::v1::{
    ConnectorStatus, CreateConnectorRequest, GetConnectorStatusRequest,
    connect_manager_client::ConnectManagerClient,
};
use etl_service::Shutdown;
use etl_sftp::{SftpAuth, SftpClient, SftpConfig};
use tempfile::TempDir;
use tonic::transport::Channel;

/// Spans must be enabled at info (trace ids land in `_etl_trace_id`); logs
/// print at `RUST_LOG` (default warn).
pub(crate) fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("connect-manager-test"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let fmt = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(filter);
        let _ = tracing_subscriber::registry()
            .with(otel)
            .with(fmt)
            .try_init();
    });
}

/// Polls `f` until it returns `Some`, at most `limit`; panics naming `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// connect-manager started in-process.
pub(crate) struct Manager {
    pub(crate) running: Option<Running>,
    pub(crate) shutdown: Shutdown,
}

impl Manager {
    pub(crate) async fn start(brokers: &str, data_dir: &Path) -> Self {
        Self::start_with(Config::ephemeral(brokers, data_dir)).await
    }

    pub(crate) async fn start_with(config: Config) -> Self {
        let shutdown = Shutdown::new();
        let running = connect_manager::start(config, shutdown.clone())
            .await
            .expect("connect-manager starts");
        Self {
            running: Some(running),
            shutdown,
        }
    }

    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Trips the shutdown and waits (bounded) until everything stopped.
    pub(crate) async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(40), r.wait())
                .await
                .expect("connect-manager stops in time")
                .expect("connect-manager stops cleanly");
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The one-column schema (`body`, optional text) of the records tests
/// produce straight to the topic.
pub(crate) fn review_schema() -> etl_core::Schema {
    etl_core::Schema {
        name: "review".into(),
        fields: vec![etl_core::Field {
            name: "body".into(),
            ty: etl_core::FieldType::String,
            optional: true,
        }],
    }
}

/// Everything one test needs.
pub(crate) struct Stack {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    pub(crate) db: String,
    pub(crate) pg_port: u16,
    pub(crate) sftp_root: PathBuf,
    pub(crate) gateway: sftp_gateway::Running,
    gateway_shutdown: Shutdown,
    pub(crate) manager: Option<Manager>,
    pub(crate) cm_dir: TempDir,
    _sftp_dir: TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.gateway_shutdown.trigger();
    }
}

impl Stack {
    pub(crate) async fn start() -> Self {
        init_tracing();
        let pg = tokio::task::spawn_blocking(testkit::shared_postgres)
            .await
            .expect("join")
            .expect("postgres starts");
        let tansu = tokio::task::spawn_blocking(testkit::shared_broker)
            .await
            .expect("join")
            .expect("tansu starts");
        let db_url = pg.create_unique_database("cm").await.expect("database");
        let db = db_url.rsplit('/').next().expect("db name").to_string();
        let sftp_dir = tempfile::tempdir().expect("tempdir");
        let gateway_shutdown = Shutdown::new();
        let gateway = sftp_gateway::start(
            sftp_gateway::Config::ephemeral(sftp_dir.path().join("data")),
            gateway_shutdown.clone(),
        )
        .await
        .expect("gateway starts");
        let cm_dir = tempfile::tempdir().expect("tempdir");
        let brokers = tansu.bootstrap();
        let manager = Manager::start(&brokers, cm_dir.path()).await;
        Self {
            topic: testkit::unique_name("review-etl"),
            brokers,
            db,
            pg_port: pg.port(),
            sftp_root: sftp_dir.path().join("data").join("etl"),
            gateway,
            gateway_shutdown,
            manager: Some(manager),
            cm_dir,
            _sftp_dir: sftp_dir,
        }
    }

    pub(crate) fn manager(&self) -> &Running {
        self.manager.as_ref().expect("manager").running()
    }

    pub(crate) async fn restart_manager(&mut self) {
        if let Some(m) = self.manager.take() {
            m.stop().await;
        }
        self.manager = Some(Manager::start(&self.brokers, self.cm_dir.path()).await);
    }

    pub(crate) async fn grpc(&self) -> ConnectManagerClient<Channel> {
        ConnectManagerClient::connect(format!("http://{}", self.manager().grpc_addr))
            .await
            .expect("gRPC connects")
    }

    pub(crate) fn rest_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.manager().rest_addr)
    }

    pub(crate) async fn sftp(&self) -> SftpClient {
        SftpClient::connect(&SftpConfig {
            host: "127.0.0.1".into(),
            port: self.gateway.sftp_addr.port(),
            user: "etl".into(),
            auth: SftpAuth::Password("etl".into()),
        })
        .await
        .expect("SFTP connects")
    }

    pub(crate) async fn pg(&self) -> tokio_postgres::Client {
        testkit::shared_postgres()
            .expect("postgres")
            .connect(&self.db)
            .await
            .expect("postgres connects")
    }

    /// The placeholders of `deploy/connectors/*.json`, pointed at this stack.
    fn env(&self, name: &str) -> Option<String> {
        Some(match name {
            "ETL_SFTP_HOST" | "ETL_PG_HOST" => "127.0.0.1".into(),
            "ETL_SFTP_PORT" => self.gateway.sftp_addr.port().to_string(),
            "ETL_GATEWAY_URL" => format!("http://{}", self.gateway.grpc_addr),
            "ETL_TOPIC" => self.topic.clone(),
            "ETL_PG_PORT" => self.pg_port.to_string(),
            "ETL_PG_DATABASE" => self.db.clone(),
            _ => return None,
        })
    }

    /// A connector file of `deploy/connectors/`, expanded for this stack, with
    /// `overrides` applied.
    pub(crate) fn connector(
        &self,
        file: &str,
        overrides: &[(&str, &str)],
    ) -> (String, HashMap<String, String>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/connectors")
            .join(file);
        let json = std::fs::read_to_string(&path).expect("connector file");
        let parsed =
            etl_core::connector_file::parse(&json, |k| self.env(k)).expect("connector file parses");
        let mut config: HashMap<String, String> = parsed.config.into_iter().collect();
        // Tests share one broker: each sink gets a consumer group of its own test.
        if config.contains_key("topics") {
            config.insert(
                "consumer.override.group.id".into(),
                format!("connect-{}", self.topic),
            );
        }
        for (k, v) in overrides {
            config.insert(k.to_string(), v.to_string());
        }
        (parsed.name, config)
    }

    /// Creates the source and sink of `deploy/connectors/` over gRPC.
    pub(crate) async fn create_connectors(&self) {
        let mut grpc = self.grpc().await;
        let (name, config) =
            self.connector("sftp-source.json", &[("file.poll.interval.ms", "200")]);
        grpc.create_connector(CreateConnectorRequest { name, config })
            .await
            .expect("source created");
        let (name, config) = self.connector("postgres-sink.json", &[]);
        grpc.create_connector(CreateConnectorRequest { name, config })
            .await
            .expect("sink created");
    }

    /// Uploads `data` as `input/<name>` the way an uploader does (hidden name, rename).
    pub(crate) async fn upload(&self, name: &str, data: &[u8]) {
        let sftp = self.sftp().await;
        sftp.write_atomic("input", name, data)
            .await
            .expect("upload");
        let _ = sftp.close().await;
    }

    pub(crate) async fn status(&self, name: &str) -> ConnectorStatus {
        self.grpc()
            .await
            .get_connector_status(GetConnectorStatusRequest { name: name.into() })
            .await
            .expect("status")
            .into_inner()
    }

    /// Rows in `review` (0 while the table does not exist).
    pub(crate) async fn count(&self, pg: &tokio_postgres::Client) -> i64 {
        match pg.query_one("SELECT count(*) FROM review", &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0,
        }
    }

    pub(crate) async fn wait_for_rows(&self, pg: &tokio_postgres::Client, n: i64) {
        eventually(&format!("{n} rows in review"), WAIT, || async {
            let c = self.count(pg).await;
            assert!(c <= n, "more rows than expected: {c} > {n}");
            (c == n).then_some(())
        })
        .await;
    }

    pub(crate) fn local(&self, rel: &str) -> PathBuf {
        self.sftp_root.join(rel)
    }

    pub(crate) async fn wait_for_file(&self, rel: &str) {
        let p = self.local(rel);
        eventually(&format!("{} to exist", p.display()), WAIT, || async {
            p.exists().then_some(())
        })
        .await;
    }
}

/// A TSV chunk with fields that need quoting and escaping, and typed columns.
pub(crate) struct Chunk {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Chunk {
    pub(crate) fn tricky(rows: usize, seed: &str) -> Self {
        let header = [
            "header",
            "body",
            "n",
            "is_streaming",
            "score",
            "language_code",
            "maybe",
        ]
        .map(String::from)
        .to_vec();
        let rows = (0..rows)
            .map(|i| {
                vec![
                    format!("{seed} Ünïcödé ☃ \"quoted\" #{i}"),
                    match i % 5 {
                        0 => format!("tab\there, comma, and\nnewline {i}"),
                        1 => format!("back\\slash \\N and \r\n crlf {i}"),
                        2 => format!("\"starts with a quote {i}"),
                        3 => String::new(),
                        _ => format!("plain {i} 😀"),
                    },
                    ((i as i64) * 7 - 300).to_string(),
                    (i % 2 == 0).to_string(),
                    format!("{}.25", i),
                    "en".into(),
                    if i % 3 == 0 {
                        String::new()
                    } else {
                        i.to_string()
                    },
                ]
            })
            .collect();
        Self { header, rows }
    }

    pub(crate) fn tsv(&self) -> Vec<u8> {
        let mut w = etl_core::table::TableWriter::tsv(Vec::new());
        w.write_row(&self.header).expect("header");
        for r in &self.rows {
            w.write_row(r).expect("row");
        }
        w.into_inner().expect("flush")
    }
}
