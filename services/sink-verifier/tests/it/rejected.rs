//! Rejected files, driven by a real gRPC `etl.v1.SftpGateway` served in the
//! test: it answers `WatchFiles` with the files already in `error/` (when asked
//! for them) and then whatever the test sends, as the gateway does.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use etl_proto::v1::{
    AnnounceUploadRequest, AnnounceUploadResponse, FileEventKind, FileReady, WatchFilesRequest,
    sftp_gateway_server::{SftpGateway, SftpGatewayServer},
};
use etl_service::Shutdown;
use tokio::sync::broadcast;
use tokio_stream::{
    Stream, StreamExt as _,
    wrappers::{BroadcastStream, TcpListenerStream},
};
use tonic::{Request, Response, Status};

use crate::{
    TestResult,
    helpers::{REVIEW_COLUMNS, manifest, numbered, review_rows, start_with},
};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct FakeGateway {
    /// Files in `error/` before anyone subscribed.
    existing: Vec<FileReady>,
    live: broadcast::Sender<FileReady>,
    requests: Arc<Mutex<Vec<WatchFilesRequest>>>,
}

type Events = Pin<Box<dyn Stream<Item = Result<FileReady, Status>> + Send>>;

#[tonic::async_trait]
impl SftpGateway for FakeGateway {
    type WatchFilesStream = Events;

    async fn watch_files(
        &self,
        request: Request<WatchFilesRequest>,
    ) -> Result<Response<Events>, Status> {
        let req = request.into_inner();
        let existing = if req.include_existing {
            self.existing.clone()
        } else {
            Vec::new()
        };
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(req);
        }
        let live = BroadcastStream::new(self.live.subscribe())
            .filter_map(|ev| ev.ok())
            .map(Ok);
        let events = tokio_stream::iter(existing.into_iter().map(Ok)).chain(live);
        Ok(Response::new(Box::pin(events)))
    }

    async fn announce_upload(
        &self,
        _request: Request<AnnounceUploadRequest>,
    ) -> Result<Response<AnnounceUploadResponse>, Status> {
        Ok(Response::new(AnnounceUploadResponse {}))
    }
}

impl FakeGateway {
    async fn serve(&self, addr: SocketAddr, shutdown: Shutdown) -> TestResult {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let server = tonic::transport::Server::builder()
            .add_service(SftpGatewayServer::new(self.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                shutdown.wait().await
            });
        tokio::spawn(server);
        Ok(())
    }

    fn requests(&self) -> Vec<WatchFilesRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn rejected(user: &str, file: &str, reason: &str) -> FileReady {
    FileReady {
        user: user.into(),
        path: format!("error/{file}"),
        kind: FileEventKind::Rejected as i32,
        reason: reason.into(),
        ..FileReady::default()
    }
}

struct StopOnDrop(Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

#[tokio::test]
async fn a_rejected_file_ends_its_run_as_failed_with_its_reason() -> TestResult {
    let run = "run-reject";
    let files = [
        "run-reject__a__chunk_000001.csv",
        "run-reject__a__chunk_000002.csv",
        "run-reject__a__chunk_000003.csv",
    ];
    let early_reason = "line 1: header only, no data row";
    let (live, _) = broadcast::channel(16);
    let gateway = FakeGateway {
        // Rejected before the verifier was watching, and before it was registered.
        existing: vec![rejected("etl", files[2], early_reason)],
        live,
        requests: Arc::default(),
    };
    // The verifier starts first: it must keep trying until the gateway answers.
    let gateway_addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut h = start_with("review", true, |c| {
        c.poll_interval_ms = 600_000;
        c.gateway_url = Some(format!("http://{gateway_addr}"));
        c.sftp_user = "etl".into();
    })
    .await?;
    let rows: Vec<_> = files.iter().map(|f| review_rows(f, 4)).collect();
    for (f, r) in files[..2].iter().zip(&rows) {
        h.register(manifest(run, f, &REVIEW_COLUMNS, r)).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop_gateway = StopOnDrop(Shutdown::new());
    gateway.serve(gateway_addr, stop_gateway.0.clone()).await?;

    // The early rejection is stored although no such file is registered yet.
    let deadline = tokio::time::Instant::now() + WAIT;
    while h
        .db
        .query_one(
            "SELECT count(*) FROM etl_verifier.rejections WHERE file_name = $1",
            &[&files[2]],
        )
        .await?
        .get::<_, i64>(0)
        == 0
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the rejection in the gateway's snapshot was never stored".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let requests = gateway.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            (r.user.as_str(), r.directory.as_str(), r.include_existing),
            ("etl", "error", true)
        );
    }
    h.register(manifest(run, files[2], &REVIEW_COLUMNS, &rows[2]))
        .await?;
    h.complete(run, 3).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.insert_reviews(files[0], &numbered(&rows[0]), true)
        .await?;
    h.watch_until(run, WAIT, |r| r.files_verified == 1).await?;
    let report = h.report(run).await?;
    assert!(!report.complete, "{report:?}");
    assert_eq!(report.state, "RUNNING");

    // Live: the connector moves the second file to error/. Events that are not
    // rejections (and the reason files beside them) change nothing.
    let reason = "line 3: 7 fields, the header has 6";
    let _ = gateway.live.send(FileReady {
        kind: FileEventKind::Uploaded as i32,
        ..rejected("etl", files[1], "")
    });
    let _ = gateway.live.send(rejected(
        "etl",
        &etl_core::naming::error_reason_name(files[1]),
        reason,
    ));
    let _ = gateway.live.send(rejected("etl", files[1], reason));
    let report = h.watch_until(run, WAIT, |r| r.complete).await?;
    assert_eq!(report.state, "FAILED");
    assert_eq!(
        (report.files, report.files_verified, report.files_rejected),
        (3, 1, 2)
    );
    assert_eq!((report.rows_expected, report.rows_landed), (12, 4));
    assert_eq!(report.missing, 8);
    let by_name = |name: &str| report.file_reports.iter().find(|f| f.file_name == name);
    let a = by_name(files[0]).ok_or("no report of the landed file")?;
    assert!(a.verified && !a.rejected && a.reject_reason.is_empty());
    let b = by_name(files[1]).ok_or("no report of the file rejected live")?;
    assert!(b.rejected && !b.verified);
    assert_eq!(b.reject_reason, reason);
    let c = by_name(files[2]).ok_or("no report of the file rejected early")?;
    assert!(c.rejected);
    assert_eq!(c.reject_reason, early_reason);
    // Stored, so it survives a restart of the verifier.
    h.restart().await?;
    assert_eq!(h.report(run).await?, report);
    Ok(())
}

#[tokio::test]
async fn the_api_token_guards_the_verifier_and_goes_with_its_gateway_watch() -> TestResult {
    use etl_proto::v1::{GetReportRequest, sink_verifier_client::SinkVerifierClient};
    use etl_service::{ApiSecurity, ClientAuth, auth::Token};
    const TOKEN: &str = "verifier-test-token-1d2e";
    let security = ApiSecurity::with_token(TOKEN);

    // The gateway requires the token, as the real one does when given one.
    let (live, _) = broadcast::channel(16);
    let gateway = FakeGateway {
        existing: Vec::new(),
        live,
        requests: Arc::default(),
    };
    let stop = StopOnDrop(Shutdown::new());
    let listener = etl_service::bind("gateway", "127.0.0.1:0").await?;
    let gateway_addr = listener.local_addr()?;
    let (mut routes, _health) = etl_service::grpc::base_routes("etl.v1.SftpGateway").await?;
    routes.add_service(SftpGatewayServer::new(gateway.clone()));
    let gateway_security = security.server()?;
    let shutdown = stop.0.clone();
    tokio::spawn(async move {
        etl_service::serve_grpc(listener, routes.routes(), &gateway_security, shutdown).await
    });

    let url = crate::helpers::fresh_database().await?;
    let mut config = sink_verifier::Config::new("127.0.0.1:0", &url);
    config.gateway_url = Some(format!("http://{gateway_addr}"));
    config.security = security;
    let running = sink_verifier::start(config, stop.0.clone()).await?;
    let verifier = format!("http://{}", running.grpc_addr);

    // Its watch of the gateway got through (with the token), for the default user.
    let deadline = tokio::time::Instant::now() + WAIT;
    while gateway.requests().is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err("the verifier's WatchFiles never reached the gateway".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(gateway.requests()[0].user, "etl");

    let request = || GetReportRequest {
        run_id: "run-none".into(),
    };
    let refused = SinkVerifierClient::new(ClientAuth::none().connect(&verifier).await?)
        .get_report(request())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let auth = ClientAuth::token(Token::new(TOKEN, "test")?);
    let answered = SinkVerifierClient::new(auth.connect(&verifier).await?)
        .get_report(request())
        .await
        .expect_err("an unknown run");
    assert_eq!(answered.code(), tonic::Code::NotFound, "{answered:?}");
    // Health needs no token (`sink-verifier healthcheck`).
    etl_service::probe_health(&verifier).await?;
    Ok(())
}
