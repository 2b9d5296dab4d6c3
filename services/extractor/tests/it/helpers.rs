//! Test helpers: the gateway in-process, a recording sink-verifier (both can
//! be restarted on their addresses), inputs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
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
use tokio::task::JoinHandle;
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
    /// For each registration: the file name, and whether the file was already
    /// published (in `input/` under its final name) when it was registered.
    seen_published: Arc<Mutex<Vec<(String, bool)>>>,
    /// The user's `input/` on disk, to look into at each registration.
    input_dir: Arc<Mutex<Option<PathBuf>>>,
    /// Milliseconds each registration takes, to make runs last.
    delay_ms: Arc<AtomicU64>,
}

impl Recorder {
    pub(crate) fn registered(&self) -> Vec<(FileManifest, String)> {
        self.registered.lock().expect("lock").clone()
    }
    pub(crate) fn completed(&self) -> Vec<CompleteRunRequest> {
        self.completed.lock().expect("lock").clone()
    }
    /// Files that were already published when they were first registered:
    /// register-before-publish means none.
    pub(crate) fn published_before_registration(&self) -> Vec<String> {
        let mut first = std::collections::BTreeMap::new();
        for (name, published) in self.seen_published.lock().expect("lock").iter() {
            first.entry(name.clone()).or_insert(*published);
        }
        first
            .into_iter()
            .filter_map(|(name, published)| published.then_some(name))
            .collect()
    }
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Relaxed);
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
        let published = self
            .input_dir
            .lock()
            .expect("lock")
            .as_ref()
            .is_some_and(|dir| dir.join(&manifest.file_name).exists());
        self.seen_published
            .lock()
            .expect("lock")
            .push((manifest.file_name.clone(), published));
        let delay = self.delay_ms.load(Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
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

/// A gateway and a recording verifier on loopback, stopped on drop. Either
/// can be stopped and started again on the same address (and, for the
/// gateway, the same data directory and host key), as a supervisor restarts
/// a service.
pub(crate) struct Stack {
    gateway: Option<sftp_gateway::Running>,
    gateway_shutdown: Shutdown,
    sftp_addr: SocketAddr,
    gateway_grpc_addr: SocketAddr,
    verifier: Option<JoinHandle<()>>,
    verifier_shutdown: Shutdown,
    pub(crate) verifier_addr: SocketAddr,
    pub(crate) recorder: Recorder,
    pub(crate) data_dir: PathBuf,
    pub(crate) dir: TempDir,
    shutdown: Shutdown,
    /// The token the gateway and the verifier require (none by default).
    security: etl_service::ApiSecurity,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Stack {
    pub(crate) async fn start() -> Self {
        Self::start_with(etl_service::ApiSecurity::default()).await
    }

    /// The gateway and the verifier requiring what `security` says (a token).
    pub(crate) async fn start_with(security: etl_service::ApiSecurity) -> Self {
        telemetry();
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("sftp");
        let shutdown = Shutdown::new();
        let gateway_shutdown = shutdown.child();
        let mut config = sftp_gateway::Config::ephemeral(&data_dir);
        config.security = security.clone();
        let gateway = sftp_gateway::start(config, gateway_shutdown.clone())
            .await
            .expect("gateway starts");

        let recorder = Recorder::default();
        *recorder.input_dir.lock().expect("lock") = Some(data_dir.join("etl").join("input"));
        let verifier_shutdown = shutdown.child();
        let (verifier_addr, verifier) =
            serve_recorder("127.0.0.1:0", &recorder, &security, &verifier_shutdown).await;
        Self {
            sftp_addr: gateway.sftp_addr,
            gateway_grpc_addr: gateway.grpc_addr,
            gateway: Some(gateway),
            gateway_shutdown,
            verifier: Some(verifier),
            verifier_shutdown,
            verifier_addr,
            recorder,
            data_dir,
            dir,
            shutdown,
            security,
        }
    }

    /// The running gateway.
    pub(crate) fn gateway(&self) -> &sftp_gateway::Running {
        self.gateway.as_ref().expect("the gateway is running")
    }

    /// Stops the gateway (its SFTP connections are cut once their uploads in
    /// flight are written) and waits until both its listeners are closed.
    pub(crate) async fn stop_gateway(&mut self) {
        let gateway = self.gateway.take().expect("the gateway is running");
        self.gateway_shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(60), gateway.wait())
            .await
            .expect("the gateway stops in time")
            .expect("the gateway stops cleanly");
    }

    /// Starts the gateway again on the same addresses and data directory.
    pub(crate) async fn start_gateway_again(&mut self) {
        let mut config = sftp_gateway::Config::ephemeral(&self.data_dir);
        config.security = self.security.clone();
        config.sftp_addr = self.sftp_addr.to_string();
        config.grpc_addr = self.gateway_grpc_addr.to_string();
        self.gateway_shutdown = self.shutdown.child();
        let gateway = sftp_gateway::start(config, self.gateway_shutdown.clone())
            .await
            .expect("the gateway starts again on the same addresses");
        self.gateway = Some(gateway);
    }

    /// Stops the verifier and waits until its listener is closed.
    pub(crate) async fn stop_verifier(&mut self) {
        let task = self.verifier.take().expect("the verifier is running");
        self.verifier_shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the verifier stops in time")
            .expect("the verifier's task");
    }

    /// Starts the verifier again on the same address, with the same records.
    pub(crate) async fn start_verifier_again(&mut self) {
        self.verifier_shutdown = self.shutdown.child();
        let (addr, task) = serve_recorder(
            &self.verifier_addr.to_string(),
            &self.recorder,
            &self.security,
            &self.verifier_shutdown,
        )
        .await;
        assert_eq!(addr, self.verifier_addr);
        self.verifier = Some(task);
    }

    pub(crate) fn endpoints(&self) -> Endpoints {
        Endpoints {
            sftp_addr: self.sftp_addr.to_string(),
            sftp_user: "etl".into(),
            sftp_password: "etl".into(),
            verifier_url: format!("http://{}", self.verifier_addr),
            gateway_url: format!("http://{}", self.gateway_grpc_addr),
            ..Endpoints::default()
        }
    }

    pub(crate) fn target(&self) -> UploadTarget {
        self.endpoints()
            .upload_target(true, etl_service::ClientAuth::none())
            .expect("valid target")
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

/// Serves `recorder` as the sink-verifier on `addr` until `shutdown`.
async fn serve_recorder(
    addr: &str,
    recorder: &Recorder,
    security: &etl_service::ApiSecurity,
    shutdown: &Shutdown,
) -> (SocketAddr, JoinHandle<()>) {
    let security = security.server().expect("the verifier's security");
    let listener = etl_service::bind("verifier", addr).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    let (mut routes, health) = etl_service::grpc::base_routes("etl.v1.SinkVerifier")
        .await
        .expect("routes");
    routes.add_service(SinkVerifierServer::new(recorder.clone()));
    health.set(true).await;
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let _ = etl_service::serve_grpc(listener, routes.routes(), &security, shutdown).await;
    });
    (bound, task)
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
