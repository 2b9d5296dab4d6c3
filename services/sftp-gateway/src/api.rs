//! gRPC `etl.v1.SftpGateway`: `WatchFiles` streams [`FileReady`] events from
//! the [`Notifier`] (after the files already there, when asked),
//! `AnnounceUpload` records an uploader's trace context.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::Arc,
};

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
    existing,
    notify::{self, Notifier},
    trace_store::TraceStore,
    tree::{UserTree, normalize},
};

pub(crate) struct GatewayApi {
    pub(crate) notifier: Notifier,
    pub(crate) trees: Arc<HashMap<String, Arc<UserTree>>>,
    pub(crate) store: Arc<TraceStore>,
    pub(crate) shutdown: Shutdown,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FileReady, Status>> + Send>>;

/// The longest path `AnnounceUpload` takes (Linux's PATH_MAX).
pub(crate) const MAX_ANNOUNCED_PATH: usize = 4096;

/// What makes two events the same notice of the same file content.
type EventKey = (String, String, i32, String);

fn key(event: &FileReady) -> EventKey {
    (
        event.user.clone(),
        event.path.clone(),
        event.kind,
        event
            .trace
            .as_ref()
            .map(|t| t.traceparent.clone())
            .unwrap_or_default(),
    )
}

#[tonic::async_trait]
impl SftpGateway for GatewayApi {
    type WatchFilesStream = EventStream;

    /// Order: the files already there (when asked; else the recent events),
    /// then live ones. Subscribing comes first, listing after, so nothing that
    /// completes in between is lost; an event that both the listing and the
    /// live stream saw is sent once.
    async fn watch_files(
        &self,
        request: Request<WatchFilesRequest>,
    ) -> Result<Response<Self::WatchFilesStream>, Status> {
        let WatchFilesRequest {
            user,
            directory,
            include_existing,
        } = request.into_inner();
        let directory = notify::clean(&directory);
        // One user's files per stream: an empty filter used to stream every
        // user's uploads to whoever asked.
        if user.is_empty() {
            return Err(Error::InvalidRequest(
                "WatchFiles needs a user: the SFTP user whose files to watch".into(),
            )
            .into());
        }
        check_user_name(&user).map_err(Error::InvalidRequest)?;
        if normalize(&directory).map_or(true, |d| d != directory) {
            return Err(Error::InvalidRequest(format!(
                "directory {directory:?} is not a directory inside the user's root"
            ))
            .into());
        }
        tracing::info!(user = %user, directory = %directory, include_existing, "watcher subscribed");
        let shutdown = self.shutdown.clone();
        let (who, dir) = (user.clone(), directory.clone());
        let (recent, live) = self.notifier.subscribe_with_recent();
        let existing = if include_existing {
            let (trees, store, notifier) = (
                self.trees.clone(),
                self.store.clone(),
                self.notifier.clone(),
            );
            let (u, d) = (user.clone(), directory.clone());
            tokio::task::spawn_blocking(move || {
                existing::existing_events(&trees, &store, &notifier, &u, &d)
            })
            .await
            .map_err(|e| Status::internal(format!("listing existing files failed: {e}")))?
        } else {
            Vec::new()
        };
        let mut listed: HashSet<EventKey> = existing.iter().map(key).collect();
        let recent: Vec<FileReady> = recent
            .into_iter()
            .filter(|e| notify::matches(e, &user, &directory))
            .collect();
        let backlog = if include_existing {
            // The listing supersedes the replay: a recent event either names a
            // file still there (listed; the event is sent in its place, with
            // its tracestate and exact time) or one already gone.
            let mut by_key: HashMap<EventKey, FileReady> =
                recent.into_iter().map(|e| (key(&e), e)).collect();
            existing
                .into_iter()
                .map(|e| by_key.remove(&key(&e)).unwrap_or(e))
                .collect()
        } else {
            recent
        };
        let backlog = futures::stream::iter(backlog.into_iter().map(Ok));
        let events = BroadcastStream::new(live)
            .filter_map(move |item| {
                let out = match item {
                    Ok(event) if notify::matches(&event, &user, &directory) => {
                        // Listed already: send it once. Removed from the set,
                        // so a later upload of the same content still passes.
                        (listed.is_empty() || !listed.remove(&key(&event))).then_some(Ok(event))
                    }
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
        if !self.trees.contains_key(&user) {
            return Err(Error::InvalidRequest(format!("no SFTP user {user:?} here")).into());
        }
        if path.len() > MAX_ANNOUNCED_PATH {
            return Err(Error::InvalidRequest(format!(
                "path is {} bytes long; at most {MAX_ANNOUNCED_PATH}",
                path.len()
            ))
            .into());
        }
        let rel = normalize(&path)
            .ok()
            .filter(|rel| !rel.is_empty())
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "path {path:?} is not a file path inside the user's root"
                ))
            })?;
        if !self
            .notifier
            .announce(&user, &rel, trace.unwrap_or_default())
        {
            return Err(Status::resource_exhausted(format!(
                "user {user:?} has {} announced uploads waiting already; upload them (or wait for them to expire) first",
                notify::MAX_ANNOUNCEMENTS_PER_USER
            )));
        }
        Ok(Response::new(AnnounceUploadResponse {}))
    }
}
