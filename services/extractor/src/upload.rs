//! Chunk files leave here: over SFTP into `input/` (a hidden temporary name,
//! then a rename, so no reader sees half a file), announced to the gateway
//! first so its FileReady event joins the chunk's trace, and registered with
//! the sink-verifier afterwards, which then watches Postgres for the rows.
//!
//! A chunk already in `input/` or `finished/` was uploaded by an earlier
//! attempt of the same run: it is not uploaded again, only registered again
//! (registering is idempotent), so a rerun neither duplicates nor leaves a gap.

use std::{
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use etl_proto::v1::{
    AnnounceUploadRequest, CompleteRunRequest, RegisterFileRequest, TraceContext,
    sftp_gateway_client::SftpGatewayClient, sink_verifier_client::SinkVerifierClient,
};
use etl_service::Backoff;
use etl_sftp::{SftpClient, SftpConfig};
use tonic::{
    Code,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tracing::{Instrument, Span};

use crate::{Error, chunk::ChunkFile};

/// Where new files go, relative to the SFTP user's root.
pub const INPUT_DIR: &str = "input";
/// Where the source connector moves files it has processed.
pub const FINISHED_DIR: &str = "finished";

/// How many times a registration is tried before the run fails.
const REGISTER_ATTEMPTS: u32 = 6;

/// Where chunk files are uploaded and who hears about them.
#[derive(Clone, Debug)]
pub struct UploadTarget {
    pub sftp: SftpConfig,
    /// gRPC URL of the sftp-gateway for `AnnounceUpload`; `None` = no announcements.
    /// Errors are ignored: a plain SFTP server has no gateway.
    pub gateway_url: Option<String>,
    /// gRPC URL of the sink-verifier; `None` = files are not registered.
    pub verifier_url: Option<String>,
}

type Inject = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type Traced = InterceptedService<Channel, Inject>;

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// An earlier attempt had uploaded it already.
    pub skipped: bool,
}

/// An open SFTP session plus the gRPC clients of one run.
pub struct Uploader {
    sftp: SftpClient,
    user: String,
    gateway: Option<SftpGatewayClient<Traced>>,
    announce: AtomicBool,
    verifier: Option<(String, SinkVerifierClient<Traced>)>,
}

fn channel(url: &str, what: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::Config(format!("{what} URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Uploader {
    /// Logs in and makes sure `input/` exists.
    pub async fn connect(target: &UploadTarget) -> Result<Self, Error> {
        let sftp = SftpClient::connect(&target.sftp).await?;
        sftp.mkdir_all(INPUT_DIR).await?;
        let inject: Inject = etl_telemetry::grpc::inject;
        let gateway = match &target.gateway_url {
            Some(url) => Some(SftpGatewayClient::with_interceptor(
                channel(url, "gateway")?,
                inject,
            )),
            None => None,
        };
        let verifier = match &target.verifier_url {
            Some(url) => Some((
                url.clone(),
                SinkVerifierClient::with_interceptor(channel(url, "verifier")?, inject),
            )),
            None => None,
        };
        tracing::info!(
            server = %target.sftp.server(),
            user = %target.sftp.user,
            host_key = %sftp.host_key_fingerprint(),
            gateway = ?target.gateway_url,
            verifier = ?target.verifier_url,
            "uploading chunk files"
        );
        Ok(Self {
            sftp,
            user: target.sftp.user.clone(),
            announce: AtomicBool::new(gateway.is_some()),
            gateway,
            verifier,
        })
    }

    /// When an earlier attempt uploaded `name` (its modification time), if it did.
    async fn already_uploaded(&self, name: &str) -> Result<Option<i64>, Error> {
        // input/ first: the connector moves input/ → finished/, so this order
        // cannot miss a file that moves between the two looks.
        for dir in [INPUT_DIR, FINISHED_DIR] {
            match self.sftp.stat(&format!("{dir}/{name}")).await {
                Ok(entry) => {
                    let at = entry
                        .modified_unix
                        .map(|s| s as i64 * 1000)
                        .unwrap_or_else(now_unix_ms);
                    return Ok(Some(at));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Uploads (unless already there) and registers one chunk; `chunk_span`
    /// is its `extract.chunk` span, the root of the file's trace.
    pub async fn deliver(&self, chunk: &ChunkFile, chunk_span: &Span) -> Result<Delivered, Error> {
        let traceparent = etl_telemetry::context::traceparent_of(chunk_span).unwrap_or_default();
        let (uploaded_at, skipped) = match self.already_uploaded(&chunk.name).await? {
            Some(at) => {
                tracing::info!(file = %chunk.name, "already uploaded by an earlier attempt of this run; not uploading again");
                (at, true)
            }
            None => {
                self.announce(&chunk.name, &traceparent).await;
                let span = tracing::info_span!(
                    parent: chunk_span,
                    "sftp.upload",
                    file = %chunk.name,
                    bytes = chunk.data.len() as u64,
                    otel.kind = "client",
                );
                self.sftp
                    .write_atomic(INPUT_DIR, &chunk.name, &chunk.data)
                    .instrument(span)
                    .await?;
                (now_unix_ms(), false)
            }
        };
        if self.verifier.is_some() {
            let manifest = chunk.manifest.to_proto(uploaded_at, &traceparent);
            let span = tracing::info_span!(
                parent: chunk_span,
                "verifier.register",
                file = %chunk.name,
                rows = chunk.manifest.row_count,
                otel.kind = "client",
            );
            self.register(manifest).instrument(span).await?;
        }
        Ok(Delivered { skipped })
    }

    /// Best effort: a gateway that does not answer is not asked again this run.
    async fn announce(&self, name: &str, traceparent: &str) {
        let Some(gateway) = &self.gateway else { return };
        if !self.announce.load(Relaxed) {
            return;
        }
        let request = AnnounceUploadRequest {
            user: self.user.clone(),
            path: format!("{INPUT_DIR}/{name}"),
            trace: Some(TraceContext {
                traceparent: traceparent.to_string(),
                tracestate: String::new(),
            }),
        };
        let mut gateway = gateway.clone();
        let call = gateway.announce_upload(request);
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                self.announce.store(false, Relaxed);
                tracing::info!(error = %e.message(), "the SFTP server takes no upload announcements (not an sftp-gateway?); uploading without");
            }
            Err(_) => {
                self.announce.store(false, Relaxed);
                tracing::info!(
                    "no answer from the sftp-gateway to an upload announcement; uploading without"
                );
            }
        }
    }

    async fn register(&self, manifest: etl_proto::v1::FileManifest) -> Result<(), Error> {
        let Some((url, client)) = &self.verifier else {
            return Ok(());
        };
        retry_transient(url, "register", || {
            let mut client = client.clone();
            let manifest = manifest.clone();
            async move {
                client
                    .register_file(RegisterFileRequest {
                        manifest: Some(manifest),
                    })
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    /// Tells the verifier the run has `files` files in all.
    pub async fn complete(&self, run_id: &str, files: u64) -> Result<(), Error> {
        let Some((url, client)) = &self.verifier else {
            return Ok(());
        };
        retry_transient(url, "complete run", || {
            let mut client = client.clone();
            let request = CompleteRunRequest {
                run_id: run_id.to_string(),
                files,
            };
            async move { client.complete_run(request).await.map(|_| ()) }
        })
        .await
    }

    pub fn sftp(&self) -> &SftpClient {
        &self.sftp
    }
}

/// Retries calls that failed for reasons that may pass (verifier restarting).
async fn retry_transient<F, Fut>(url: &str, what: &str, mut call: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(3));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(()) => return Ok(()),
            Err(s)
                if attempt < REGISTER_ATTEMPTS
                    && matches!(
                        s.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
                    ) =>
            {
                tracing::warn!(url, attempt, error = %s.message(), "{what} failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(s) => {
                return Err(Error::Verifier {
                    url: url.to_string(),
                    reason: format!("{what}: {} ({:?})", s.message(), s.code()),
                });
            }
        }
    }
}
