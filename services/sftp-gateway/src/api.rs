//! gRPC `etl.v1.SftpGateway`: `WatchFiles` streams [`FileReady`] events from
//! the [`Notifier`] (after the files already there, when asked),
//! `AnnounceUpload` records an uploader's trace context.
//!
//! Both name a user, and both act on that user's root: a watcher gets the
//! events of every file in its user's root, whoever uploaded it, and an
//! announcement holds for the path in the announcer's root, whichever of the
//! root's users completes the upload.

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
    /// Each user's tree, by user name (users of one root share it).
    pub(crate) trees: Arc<HashMap<String, Arc<UserTree>>>,
    pub(crate) store: Arc<TraceStore>,
    pub(crate) shutdown: Shutdown,
}

impl GatewayApi {
    /// The tree of `user`, who must exist: a name that is no user has no
    /// root, so there is nothing to watch or announce in.
    fn tree(&self, user: &str) -> Result<Arc<UserTree>, Status> {
        check_user_name(user).map_err(Error::InvalidRequest)?;
        self.trees
            .get(user)
            .cloned()
            .ok_or_else(|| Error::InvalidRequest(format!("no SFTP user {user:?} here")).into())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FileReady, Status>> + Send>>;

/// The longest path `AnnounceUpload` takes (Linux's PATH_MAX).
pub(crate) const MAX_ANNOUNCED_PATH: usize = 4096;

/// What makes two events of one root the same notice of the same file
/// content. Not the user: a listed file's event names the subscriber, the
/// live event of the same upload its uploader.
type EventKey = (String, i32, String);

fn key(event: &FileReady) -> EventKey {
    (
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
                "WatchFiles needs a user: the SFTP user whose root to watch".into(),
            )
            .into());
        }
        let tree = self.tree(&user)?;
        if normalize(&directory).map_or(true, |d| d != directory) {
            return Err(Error::InvalidRequest(format!(
                "directory {directory:?} is not a directory inside the user's root"
            ))
            .into());
        }
        let root = tree.name().to_string();
        tracing::info!(user = %user, root = %root, directory = %directory, include_existing, "watcher subscribed");
        let shutdown = self.shutdown.clone();
        let (who, dir) = (user.clone(), directory.clone());
        let (recent, live) = self.notifier.subscribe_with_recent();
        let existing = if include_existing {
            let (store, notifier) = (self.store.clone(), self.notifier.clone());
            let (u, d) = (user.clone(), directory.clone());
            tokio::task::spawn_blocking(move || {
                existing::existing_events(&tree, &store, &notifier, &u, &d)
            })
            .await
            .map_err(|e| Status::internal(format!("listing existing files failed: {e}")))?
        } else {
            Vec::new()
        };
        let mut listed: HashSet<EventKey> = existing.iter().map(key).collect();
        let recent: Vec<FileReady> = recent
            .into_iter()
            .filter(|n| notify::matches(n, &root, &directory))
            .map(|n| n.event)
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
                    Ok(notice) if notify::matches(&notice, &root, &directory) => {
                        let event = notice.event;
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
        let tree = self.tree(&user)?;
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
            .announce(&user, tree.name(), &rel, trace.unwrap_or_default())
        {
            return Err(Status::resource_exhausted(format!(
                "user {user:?} has {} announced uploads waiting already; upload them (or wait for them to expire) first",
                notify::MAX_ANNOUNCEMENTS_PER_USER
            )));
        }
        Ok(Response::new(AnnounceUploadResponse {}))
    }
}
