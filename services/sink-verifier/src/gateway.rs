//! Rejected files: the sftp-gateway's `WatchFiles` on `error/`, so a file the
//! connector refused ends its run (FAILED, with the reason) instead of keeping
//! it waiting for rows that will never come.
//!
//! The subscription asks for the files already in `error/` first
//! (`include_existing`), so a rejection made while this verifier or its
//! subscription was down is still seen; it reconnects with backoff whenever the
//! stream breaks. Each rejection is stored whether or not the file is
//! registered yet: the registration finds it.

use std::sync::Arc;

use etl_proto::v1::{FileEventKind, FileReady, WatchFilesRequest};
use etl_service::{Backoff, ClientAuth, Shutdown};

use crate::registry::Registry;

/// The directory, relative to each user's root, that holds rejected files.
const ERROR_DIR: &str = "error";

/// The rejected file an event names, and why; `None` for other events (and
/// for the `<name>.error.txt` files beside the rejected ones).
fn rejection(ev: &FileReady) -> Option<(&str, &str)> {
    if ev.kind() != FileEventKind::Rejected {
        return None;
    }
    let name = etl_core::naming::base_name(&ev.path);
    // `<name>.error.txt`, the reason beside a rejected file.
    let is_reason_file = name.ends_with(&etl_core::naming::error_reason_name(""));
    if name.is_empty() || is_reason_file {
        return None;
    }
    Some((name, ev.reason.as_str()))
}

/// Follows the gateway's rejections until `shutdown`.
pub(crate) async fn watch_rejections(
    url: String,
    auth: ClientAuth,
    user: String,
    registry: Arc<Registry>,
    shutdown: Shutdown,
) {
    let url = etl_service::client::url(&url);
    let mut backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        let subscribe = auth.watch_files(
            &url,
            WatchFilesRequest {
                user: user.clone(),
                directory: ERROR_DIR.to_string(),
                include_existing: true,
            },
        );
        let subscribed = tokio::select! {
            r = subscribe => r,
            _ = shutdown.wait() => return,
        };
        match subscribed {
            Ok(mut stream) => {
                tracing::info!(gateway = %url, %user, "watching the gateway for rejected files");
                failures = 0;
                backoff = Backoff::default();
                loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        _ = shutdown.wait() => return,
                    };
                    match message {
                        Ok(Some(ev)) => {
                            let Some((file, reason)) = rejection(&ev) else {
                                continue;
                            };
                            // Postgres may be away: hold the stream (the gateway
                            // waits) until the rejection is stored.
                            let stored =
                                etl_service::retry("postgres (rejection)", &shutdown, || {
                                    registry.reject(file, reason)
                                })
                                .await;
                            if stored.is_none() {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::info!(gateway = %url, "gateway closed the watch; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(gateway = %url, error = %e.message(), "watch of rejected files failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(gateway = %url, error = %e, attempt = failures, "cannot watch the gateway for rejected files; retrying");
                }
            }
        }
        if !shutdown.sleep(backoff.next_delay()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, kind: FileEventKind, reason: &str) -> FileReady {
        FileReady {
            path: path.into(),
            kind: kind as i32,
            reason: reason.into(),
            ..FileReady::default()
        }
    }

    #[test]
    fn only_rejections_of_data_files_count() {
        let ev = event("error/a.csv", FileEventKind::Rejected, "line 3: ragged");
        assert_eq!(rejection(&ev), Some(("a.csv", "line 3: ragged")));
        let ev = event("error/a.csv", FileEventKind::Uploaded, "");
        assert_eq!(rejection(&ev), None);
        let reason_file = etl_core::naming::error_reason_name("a.csv");
        let ev = event(&format!("error/{reason_file}"), FileEventKind::Rejected, "");
        assert_eq!(rejection(&ev), None);
    }
}
