//! The gateway's `WatchFiles` stream as a source of notices: reconnects with
//! backoff, and asks for a rescan after every (re)connect, since events sent
//! while disconnected are gone.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use etl_proto::v1::WatchFilesRequest;
use etl_service::{Backoff, Shutdown};
use tokio::sync::mpsc;

use super::{Notice, Origin, WatchEvent};

/// How long to wait for the next replayed event after subscribing: the replay
/// arrives at once, so a short quiet gap means it is over.
const REPLAY_WINDOW: Duration = Duration::from_millis(150);

fn notice_of(ev: etl_proto::v1::FileReady) -> WatchEvent {
    let name = etl_core::naming::base_name(&ev.path).to_string();
    let traceparent = ev.trace.map(|t| t.traceparent).unwrap_or_default();
    WatchEvent::File(Notice {
        name,
        traceparent,
        origin: Origin::Input,
    })
}

pub(crate) async fn watch_gateway(
    url: String,
    client: etl_service::ClientAuth,
    user: String,
    directory: String,
    tx: mpsc::Sender<WatchEvent>,
    connected: Arc<AtomicBool>,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        let subscribe = client.watch_files(
            &url,
            WatchFilesRequest {
                user: user.clone(),
                directory: directory.clone(),
                // Files already waiting come first, with their trace context.
                include_existing: true,
            },
        );
        let subscribed = tokio::select! {
            r = subscribe => r,
            _ = shutdown.wait() => return,
        };
        match subscribed {
            Ok(mut stream) => {
                tracing::info!(gateway = %url, %user, %directory, "watching the gateway for new files");
                failures = 0;
                backoff.reset(Duration::from_millis(100));
                connected.store(true, Ordering::Relaxed);
                // The gateway first replays its recent events: queue those (they
                // carry the uploaders' trace contexts) before the rescan finds
                // the same files without one.
                while let Ok(Ok(Some(ev))) =
                    tokio::time::timeout(REPLAY_WINDOW, stream.message()).await
                {
                    if tx.send(notice_of(ev)).await.is_err() {
                        return;
                    }
                }
                if tx.send(WatchEvent::Rescan).await.is_err() {
                    return;
                }
                loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        _ = shutdown.wait() => return,
                    };
                    match message {
                        Ok(Some(ev)) => {
                            if tx.send(notice_of(ev)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            connected.store(false, Ordering::Relaxed);
                            tracing::info!(gateway = %url, "gateway closed the watch; reconnecting");
                            break;
                        }
                        Err(e) => {
                            connected.store(false, Ordering::Relaxed);
                            tracing::warn!(gateway = %url, error = %e.message(), "watch failed; reconnecting (polling continues)");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(gateway = %url, error = %e, "cannot watch the gateway; polling only until it answers");
                }
            }
        }
        if !shutdown.sleep(backoff.next_delay()).await {
            return;
        }
    }
}
