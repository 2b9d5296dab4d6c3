//! Test helpers: the gateway in-process, a recording sink-verifier, inputs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
};

use etl_core::review::LabelScheme;
use etl_proto::v1::{
    CompleteRunRequest, CompleteRunResponse, FileManifest, GetReportRequest, RegisterFileRequest,
    RegisterFileResponse, RunReport,
    sink_verifier_server::{SinkVerifier, SinkVerifierServer},
};
use etl_service::Shutdown;
use extractor::{Endpoints, upload::UploadTarget};
use futures::Stream;
use tempfile::TempDir;
use tonic::{Request, Response, Status};

/// Telemetry for tests. `etl_telemetry::init_for_tests` filters every layer
/// with `RUST_LOG` (default `warn`), which disables the `info` spans a chunk's
/// trace is made of; here the OpenTelemetry layer sees every span and only
/// the log output is filtered. Installed first, so `init_for_tests` only adds
/// the propagator.
pub(crate) fn telemetry() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("extractor-tests"));
        let logs = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
            );
        let _ = tracing_subscriber::registry()
            .with(otel)
            .with(logs)
            .try_init();
        etl_telemetry::init_for_tests();
    });
}

/// What the recording verifier heard.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    /// Each registration with the `traceparent` it was sent with.
    pub(crate) registered: Arc<Mutex<Vec<(FileManifest, String)>>>,
    pub(crate) completed: Arc<Mutex<Vec<CompleteRunRequest>>>,
}

impl Recorder {
    pub(crate) fn registered(&self) -> Vec<(FileManifest, String)> {
        self.registered.lock().expect("lock").clone()
    }
    pub(crate) fn completed(&self) -> Vec<CompleteRunRequest> {
        self.completed.lock().expect("lock").clone()
    }
}

#[tonic::async_trait]
impl SinkVerifier for Recorder {
    type WatchReportStream = Pin<Box<dyn Stream<Item = Result<RunReport, Status>> + Send>>;

    async fn register_file(
        &self,
        request: Request<RegisterFileRequest>,
    ) -> Result<Response<RegisterFileResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let manifest = request
            .into_inner()
            .manifest
            .ok_or_else(|| Status::invalid_argument("no manifest"))?;
        self.registered
            .lock()
            .expect("lock")
            .push((manifest, traceparent));
        Ok(Response::new(RegisterFileResponse {}))
    }

    async fn complete_run(
        &self,
        request: Request<CompleteRunRequest>,
    ) -> Result<Response<CompleteRunResponse>, Status> {
        self.completed
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(Response::new(CompleteRunResponse {}))
    }

    async fn get_report(
        &self,
        _request: Request<GetReportRequest>,
    ) -> Result<Response<RunReport>, Status> {
        Err(Status::unimplemented("recording verifier"))
    }

    async fn watch_report(
        &self,
        _request: Request<GetReportRequest>,
    ) -> Result<Response<Self::WatchReportStream>, Status> {
        Err(Status::unimplemented("recording verifier"))
    }
}

/// A gateway and a recording verifier on loopback, stopped on drop.
pub(crate) struct Stack {
    pub(crate) gateway: sftp_gateway::Running,
    pub(crate) verifier_addr: SocketAddr,
    pub(crate) recorder: Recorder,
    pub(crate) data_dir: PathBuf,
    pub(crate) dir: TempDir,
    shutdown: Shutdown,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Stack {
    pub(crate) async fn start() -> Self {
        telemetry();
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("sftp");
        let shutdown = Shutdown::new();
        let gateway =
            sftp_gateway::start(sftp_gateway::Config::ephemeral(&data_dir), shutdown.clone())
                .await
                .expect("gateway starts");

        let recorder = Recorder::default();
        let listener = etl_service::bind("verifier", "127.0.0.1:0")
            .await
            .expect("bind");
        let verifier_addr = listener.local_addr().expect("addr");
        let (mut routes, health) = etl_service::grpc::base_routes("etl.v1.SinkVerifier")
            .await
            .expect("routes");
        routes.add_service(SinkVerifierServer::new(recorder.clone()));
        health.set(true).await;
        tokio::spawn(etl_service::serve_grpc(
            listener,
            routes.routes(),
            shutdown.clone(),
        ));
        Self {
            gateway,
            verifier_addr,
            recorder,
            data_dir,
            dir,
            shutdown,
        }
    }

    pub(crate) fn endpoints(&self) -> Endpoints {
        Endpoints {
            sftp_addr: self.gateway.sftp_addr.to_string(),
            sftp_user: "etl".into(),
            sftp_password: "etl".into(),
            verifier_url: format!("http://{}", self.verifier_addr),
            gateway_url: format!("http://{}", self.gateway.grpc_addr),
        }
    }

    pub(crate) fn target(&self) -> UploadTarget {
        self.endpoints().upload_target(true).expect("valid target")
    }

    /// `<data-dir>/etl/input`.
    pub(crate) fn input_dir(&self) -> PathBuf {
        self.data_dir.join("etl").join("input")
    }

    /// Names in the user's `input/`, sorted.
    pub(crate) fn uploaded(&self) -> Vec<String> {
        list(&self.input_dir())
    }
}

pub(crate) fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes `rows` generated reviews (seed `seed`) to `dir/name`.
pub(crate) fn input_file(
    dir: &Path,
    name: &str,
    rows: u64,
    seed: u64,
    labels: LabelScheme,
) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create input");
    extractor::generate(rows, seed, labels, std::io::BufWriter::new(file)).expect("generate");
    path
}
