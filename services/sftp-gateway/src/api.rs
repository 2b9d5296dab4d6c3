//! gRPC `etl.v1.SftpGateway`: `WatchFiles` streams [`FileReady`] events from
//! the [`Notifier`], `AnnounceUpload` records an uploader's trace context.

use std::pin::Pin;

use etl_proto::v1::{
    AnnounceUploadRequest, AnnounceUploadResponse, FileReady, WatchFilesRequest,
    sftp_gateway_server::SftpGateway,
};
use etl_service::Shutdown;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::{Request, Response, Status};

use crate::{
    Error,
    config::check_user_name,
    notify::{self, Notifier},
    tree::normalize,
};

pub(crate) struct GatewayApi {
    pub(crate) notifier: Notifier,
    pub(crate) shutdown: Shutdown,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FileReady, Status>> + Send>>;

#[tonic::async_trait]
impl SftpGateway for GatewayApi {
    type WatchFilesStream = EventStream;

    async fn watch_files(
        &self,
        request: Request<WatchFilesRequest>,
    ) -> Result<Response<Self::WatchFilesStream>, Status> {
        let WatchFilesRequest { user, directory } = request.into_inner();
        let directory = notify::clean(&directory);
        tracing::info!(user = %user, directory = %directory, "watcher subscribed");
        let shutdown = self.shutdown.clone();
        let (who, dir) = (user.clone(), directory.clone());
        let (recent, live) = self.notifier.subscribe_with_recent();
        let (u, d) = (user.clone(), directory.clone());
        let backlog = futures::stream::iter(
            recent
                .into_iter()
                .filter(move |e| notify::matches(e, &u, &d))
                .map(Ok),
        );
        let events = BroadcastStream::new(live)
            .filter_map(move |item| {
                let out = match item {
                    Ok(event) if notify::matches(&event, &user, &directory) => Some(Ok(event)),
                    Ok(_) => None,
                    Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                        // The stream goes on; the watcher must rescan to find what it missed.
                        tracing::warn!(user = %who, directory = %dir, skipped, "watcher lagging behind; events dropped");
                        None
                    }
                };
                std::future::ready(out)
            })
            // The stream never ends on its own; it must on shutdown, or the
            // gRPC server would wait for it forever.
            .take_until(async move { shutdown.wait().await });
        let events = backlog.chain(events);
        Ok(Response::new(Box::pin(events)))
    }

    async fn announce_upload(
        &self,
        request: Request<AnnounceUploadRequest>,
    ) -> Result<Response<AnnounceUploadResponse>, Status> {
        let AnnounceUploadRequest { user, path, trace } = request.into_inner();
        check_user_name(&user).map_err(Error::InvalidRequest)?;
        let rel = normalize(&path)
            .ok()
            .filter(|rel| !rel.is_empty())
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "path {path:?} is not a file path inside the user's root"
                ))
            })?;
        self.notifier
            .announce(&user, &rel, trace.unwrap_or_default());
        Ok(Response::new(AnnounceUploadResponse {}))
    }
}
