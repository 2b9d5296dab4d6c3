//! Live notice of files. The SFTP handler reports a file when it is closed
//! after writing or renamed into place; if it is in a watched directory and
//! not hidden, an UPLOADED [`FileReady`] goes out on a broadcast channel that
//! gRPC `WatchFiles` streams (and in-process subscribers) read. A file that a
//! client (a connector) moves into `error/` becomes a REJECTED event whose
//! reason is the `<name>.error.txt` written beside it; only watchers of
//! `error` get those.
//!
//! Notices follow the tree, not the login: each one is tagged with the root
//! the file is in ([`Notice`]), and a `WatchFiles` subscriber gets those of
//! its user's root, whoever uploaded (the event's `user` names the uploader).
//! That is what lets an uploader and a connector with logins of their own
//! share one root: the connector, watching as itself, hears of the
//! uploader's files at once instead of finding them by polling.
//!
//! Announcements (`AnnounceUpload`) map `(root, path)` to the uploader's trace
//! context for a while, so the `sftp.receive` span and the event join the
//! uploader's trace whichever user of the root completes the upload; each
//! announcement still counts against the user who made it
//! ([`MAX_ANNOUNCEMENTS_PER_USER`]). The handling of an upload is split in two
//! (`Notifier::receive`, then `Notifier::publish`) so the SFTP handler can
//! store the trace context with the file in between: the event never
//! announces a file whose context is not yet stored.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etl_proto::v1::{FileEventKind, FileReady, TraceContext};
use tokio::sync::broadcast;

use crate::tree::ERROR_DIR;

/// Suffix of the file that tells why `error/<name>` was rejected.
pub const REASON_SUFFIX: &str = ".error.txt";
/// Longest reason carried by a REJECTED event; the rest is cut off.
pub const REASON_MAX: usize = 4096;

/// Name of the span around the handling of one completed upload.
pub const SPAN_RECEIVE: &str = "sftp.receive";
/// How long an announcement waits for its upload.
const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(10 * 60);
/// Announcements kept at most; the oldest go first beyond this.
const MAX_ANNOUNCEMENTS: usize = 100_000;
/// Announcements one user may have waiting. An uploader announces a file
/// just before writing it, so thousands waiting is a client announcing files
/// it never uploads; beyond this its announcements are refused, and no user
/// can push another's out of the table.
pub const MAX_ANNOUNCEMENTS_PER_USER: usize = 10_000;
/// Events buffered per subscriber before it counts as lagging.
const CHANNEL_CAPACITY: usize = 4096;
/// Recent events replayed to each new subscriber, so a consumer that connects
/// after an upload (start order, reconnects) still gets the file's trace context.
const RECENT_MAX: usize = 1024;
const RECENT_TTL: Duration = Duration::from_secs(10 * 60);

struct Announcement {
    trace: TraceContext,
    at: Instant,
    /// Who announced it: the user whose cap it counts against.
    user: String,
}

/// An event with the root of its file: what `WatchFiles` filters on.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    pub(crate) root: Arc<str>,
    pub(crate) event: FileReady,
}

struct Inner {
    /// Every notice, for `WatchFiles`.
    tx: broadcast::Sender<Notice>,
    /// The same events without their root, for in-process subscribers
    /// ([`Notifier::subscribe`]), who see every root.
    plain: broadcast::Sender<FileReady>,
    watched: Vec<String>,
    /// By `(root, path)`.
    announced: Mutex<HashMap<(String, String), Announcement>>,
    recent: Mutex<std::collections::VecDeque<(Instant, Notice)>>,
}

/// The hub for FileReady events and upload announcements. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Notifier {
    /// `watched`: directories relative to each root (`"input"`).
    pub fn new(watched: &[String]) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (plain, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                tx,
                plain,
                watched: watched
                    .iter()
                    .map(|d| d.trim_matches('/').to_string())
                    .filter(|d| !d.is_empty())
                    .collect(),
                announced: Mutex::new(HashMap::new()),
                recent: Mutex::new(std::collections::VecDeque::new()),
            }),
        }
    }

    /// Every FileReady from now on, of every root. A receiver that falls more
    /// than a few thousand events behind gets `RecvError::Lagged` and then
    /// continues.
    pub fn subscribe(&self) -> broadcast::Receiver<FileReady> {
        self.inner.plain.subscribe()
    }

    /// Every notice from now on, preceded by the recent ones (at most
    /// `RECENT_MAX`, none older than ten minutes). Subscribing before reading
    /// the backlog means no event falls between the two; one may come twice,
    /// which consumers tolerate (the file is gone after the first).
    pub(crate) fn subscribe_with_recent(&self) -> (Vec<Notice>, broadcast::Receiver<Notice>) {
        let rx = self.inner.tx.subscribe();
        let recent = self
            .inner
            .recent
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(at, _)| at.elapsed() < RECENT_TTL)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default();
        (recent, rx)
    }

    /// The watched directories.
    pub fn watched_dirs(&self) -> &[String] {
        &self.inner.watched
    }

    /// Remembers the uploader's trace context for `path` in `root`, the
    /// announcing `user`'s root: whoever of the root's users completes the
    /// upload, it joins this trace. Returns false (and remembers nothing) when
    /// `user` already has [`MAX_ANNOUNCEMENTS_PER_USER`] waiting.
    pub fn announce(&self, user: &str, root: &str, path: &str, trace: TraceContext) -> bool {
        let key = (root.to_string(), clean(path));
        let now = Instant::now();
        let Ok(mut table) = self.inner.announced.lock() else {
            return false;
        };
        table.retain(|_, a| now.duration_since(a.at) < ANNOUNCEMENT_TTL);
        // Announcing again what the user announced already replaces it; no
        // other user's announcement lets it past its cap.
        let replaces_own = table.get(&key).is_some_and(|a| a.user == user);
        if !replaces_own
            && table.values().filter(|a| a.user == user).count() >= MAX_ANNOUNCEMENTS_PER_USER
        {
            tracing::warn!(
                user,
                root,
                "too many announced uploads waiting; announcement refused"
            );
            return false;
        }
        if table.len() >= MAX_ANNOUNCEMENTS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, a)| a.at)
                .map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
        }
        tracing::debug!(user, root, path = %key.1, traceparent = %trace.traceparent, "upload announced");
        table.insert(
            key,
            Announcement {
                trace,
                at: now,
                user: user.to_string(),
            },
        );
        true
    }

    fn take_announcement(&self, root: &str, path: &str) -> Option<Announcement> {
        let mut table = self.inner.announced.lock().ok()?;
        let a = table.remove(&(root.to_string(), path.to_string()))?;
        (a.at.elapsed() < ANNOUNCEMENT_TTL).then_some(a)
    }

    /// Whether a completed file at `rel` (relative to its root) is
    /// announced: inside a watched directory, and no path component hidden.
    pub fn is_watched(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        if rel
            .split('/')
            .any(|part| part.starts_with('.') || part.is_empty())
        {
            return false;
        }
        self.inner.watched.iter().any(|dir| {
            rel.strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Whether `rel` lies inside a watched directory, hidden names included
    /// (an uploader's temporaries): where an `upload` user may write.
    pub(crate) fn is_inside_watched(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        self.inner.watched.iter().any(|dir| {
            rel.strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
        })
    }

    /// Whether a file renamed to `rel` is a rejection: directly or deeper in
    /// `error/`, not hidden, and not a `<name>.error.txt` reason file.
    pub fn is_rejection(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        rel.strip_prefix(ERROR_DIR)
            .is_some_and(|rest| rest.starts_with('/'))
            && !rel
                .split('/')
                .any(|part| part.starts_with('.') || part.is_empty())
            && !rel.ends_with(REASON_SUFFIX)
    }

    /// Starts the gateway's handling of a file that `user` completed at `rel`
    /// of `root`: the `sftp.receive` span and the trace context to store with
    /// the file and send with the event. `None` when `rel` is not watched. The
    /// span joins the trace announced for `(root, rel)` (by any user of the
    /// root), or else the trace the file already carries (`inherited`, a file
    /// moved back into a watched directory); without either, the file's trace
    /// starts here.
    pub(crate) fn receive(
        &self,
        user: &str,
        root: &str,
        rel: &str,
        size: u64,
        inherited: Option<&str>,
    ) -> Option<Receipt> {
        if !self.is_watched(rel) {
            return None;
        }
        let announced = self.take_announcement(root, rel);
        let span = tracing::info_span!(
            parent: None,
            "sftp.receive",
            otel.kind = "consumer",
            sftp.user = %user,
            sftp.root = %root,
            file.path = %rel,
            file.size = size,
        );
        let parent = announced
            .as_ref()
            .map(|a| a.trace.traceparent.as_str())
            .filter(|tp| !tp.is_empty())
            .or(inherited);
        if let Some(parent) = parent {
            etl_telemetry::context::set_parent(&span, parent);
        }
        // The event and the file carry this span's context, so the consumer's
        // work nests under the gateway's hop, in the uploader's trace when
        // there is one.
        let traceparent = etl_telemetry::context::traceparent_of(&span)
            .or_else(|| parent.map(str::to_string))
            .unwrap_or_default();
        let trace = TraceContext {
            traceparent,
            tracestate: announced
                .as_ref()
                .map(|a| a.trace.tracestate.clone())
                .unwrap_or_default(),
        };
        Some(Receipt {
            span,
            user: user.to_string(),
            root: root.into(),
            rel: rel.to_string(),
            size,
            trace,
            announced,
        })
    }

    /// Sends the event of a [`Receipt`] once the file is in place and its
    /// trace context stored.
    pub(crate) fn publish(&self, receipt: Receipt) {
        let Receipt {
            span,
            user,
            root,
            rel,
            size,
            trace,
            announced: _,
        } = receipt;
        let event = FileReady {
            user,
            path: rel,
            size,
            completed_at_unix_ms: etl_core::time::now_unix_ms(),
            trace: Some(trace),
            kind: FileEventKind::Uploaded as i32,
            reason: String::new(),
        };
        span.in_scope(|| self.send(Notice { root, event }));
    }

    /// The file of `receipt` did not arrive after all (its rename failed):
    /// gives the announcement back, to its announcer, for the next attempt.
    pub(crate) fn abandon(&self, receipt: Receipt) {
        if let Some(a) = receipt.announced {
            let _ = self.announce(&a.user, &receipt.root, &receipt.rel, a.trace);
        }
    }

    /// Called when `user` moved a file to `rel` in `error/` of `root`: a
    /// REJECTED event with the connector's `reason` and the file's stored
    /// trace.
    pub(crate) fn rejected(
        &self,
        user: &str,
        root: &str,
        rel: &str,
        size: u64,
        reason: String,
        traceparent: Option<String>,
    ) {
        let event = FileReady {
            user: user.to_string(),
            path: rel.to_string(),
            size,
            completed_at_unix_ms: etl_core::time::now_unix_ms(),
            trace: traceparent.map(|traceparent| TraceContext {
                traceparent,
                tracestate: String::new(),
            }),
            kind: FileEventKind::Rejected as i32,
            reason,
        };
        self.send(Notice {
            root: root.into(),
            event,
        });
    }

    /// [`Notifier::receive`] and [`Notifier::publish`] at once, for a file
    /// whose trace context needs no storing.
    #[cfg(test)]
    pub(crate) fn upload_completed(&self, user: &str, root: &str, rel: &str, size: u64) {
        match self.receive(user, root, rel, size, None) {
            Some(receipt) => self.publish(receipt),
            None => tracing::debug!(user, path = rel, size, "file written (not watched)"),
        }
    }

    fn send(&self, notice: Notice) {
        if let Ok(mut recent) = self.inner.recent.lock() {
            while recent.len() >= RECENT_MAX
                || recent
                    .front()
                    .is_some_and(|(at, _)| at.elapsed() >= RECENT_TTL)
            {
                recent.pop_front();
            }
            recent.push_back((Instant::now(), notice.clone()));
        }
        let event = &notice.event;
        let (user, root, path, size, kind) = (
            event.user.clone(),
            notice.root.clone(),
            event.path.clone(),
            event.size,
            event.kind,
        );
        let _ = self.inner.plain.send(notice.event.clone());
        let subscribers = self.inner.tx.send(notice).unwrap_or(0);
        if kind == FileEventKind::Rejected as i32 {
            tracing::info!(user, %root, path, size, subscribers, "file rejected");
        } else {
            tracing::info!(user, %root, path, size, subscribers, "upload complete");
        }
    }
}

/// A completed upload between [`Notifier::receive`] and [`Notifier::publish`].
pub(crate) struct Receipt {
    span: tracing::Span,
    /// Who completed the upload: the event's `user`.
    user: String,
    root: Arc<str>,
    rel: String,
    size: u64,
    /// What the file stores and the event carries.
    pub(crate) trace: TraceContext,
    announced: Option<Announcement>,
}

/// Whether `notice` passes a `WatchFiles` filter: a file in `root` (the
/// subscribing user's root, whoever uploaded), and in `directory` (empty =
/// every upload in a watched directory). Rejections reach only those who
/// asked for their directory (`error`): a watcher of uploads must never
/// mistake a rejected file for a new one.
pub(crate) fn matches(notice: &Notice, root: &str, directory: &str) -> bool {
    if *notice.root != *root {
        return false;
    }
    let event = &notice.event;
    let directory = directory.trim_matches('/');
    let inside = event
        .path
        .strip_prefix(directory)
        .is_some_and(|rest| rest.starts_with('/'));
    if event.kind == FileEventKind::Rejected as i32 {
        !directory.is_empty() && inside
    } else {
        directory.is_empty() || inside
    }
}

/// A client path as the table keys it: relative, no `./` or doubled slashes.
pub(crate) fn clean(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier() -> Notifier {
        Notifier::new(&["input".to_string()])
    }

    #[test]
    fn watched_paths() {
        let n = notifier();
        assert!(n.is_watched("input/a.csv"));
        assert!(n.is_watched("input/sub/a.csv"));
        assert!(!n.is_watched("input/.a.csv.part"));
        assert!(!n.is_watched("input/.tmp/a.csv"));
        assert!(!n.is_watched("finished/a.csv"));
        assert!(!n.is_watched("inputs/a.csv"));
        assert!(!n.is_watched("input"));
    }

    #[test]
    fn inside_watched_includes_hidden_names() {
        let n = notifier();
        assert!(n.is_inside_watched("input/.a.csv.part"));
        assert!(n.is_inside_watched("input/sub/a"));
        assert!(!n.is_inside_watched("input"));
        assert!(!n.is_inside_watched("input/"));
        assert!(!n.is_inside_watched("finished/a.csv"));
        assert!(!n.is_inside_watched("inputs/a.csv"));
    }

    #[test]
    fn completed_upload_published_with_announced_trace() {
        etl_telemetry::init_for_tests();
        let n = notifier();
        let mut rx = n.subscribe();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        n.announce(
            "etl",
            "etl",
            "/input/a.csv",
            TraceContext {
                traceparent: tp.into(),
                tracestate: String::new(),
            },
        );
        n.upload_completed("etl", "etl", "input/.a.csv.part", 3);
        n.upload_completed("etl", "etl", "input/a.csv", 3);
        n.upload_completed("etl", "etl", "input/b.csv", 4);
        let a = rx.try_recv().expect("a");
        assert_eq!(a.path, "input/a.csv");
        assert_eq!(a.size, 3);
        let trace = a.trace.unwrap_or_default();
        assert_eq!(
            etl_telemetry::trace_id_of(&trace.traceparent),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let b = rx.try_recv().expect("b");
        assert_eq!(b.path, "input/b.csv");
        // Not announced: a trace of its own, starting at the gateway.
        let b_trace = b.trace.unwrap_or_default().traceparent;
        let b_id = etl_telemetry::trace_id_of(&b_trace).expect("a trace for b");
        assert_ne!(b_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn announcements_belong_to_the_root_and_count_against_their_announcer() {
        etl_telemetry::init_for_tests();
        let n = notifier();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = || TraceContext {
            traceparent: tp.into(),
            tracestate: String::new(),
        };
        assert!(n.announce("up", "shared", "input/a.csv", trace()));
        // The same path in another root is another file: no announcement there.
        let other = n.receive("alice", "alice", "input/a.csv", 1, None);
        let other_tp = other.map(|r| r.trace.traceparent).unwrap_or_default();
        assert_ne!(
            etl_telemetry::trace_id_of(&other_tp),
            etl_telemetry::trace_id_of(tp)
        );
        // Another user of the root completes it: the announced trace.
        let receipt = n.receive("connect", "shared", "input/a.csv", 1, None);
        let receipt = receipt.expect("watched");
        assert_eq!(
            etl_telemetry::trace_id_of(&receipt.trace.traceparent),
            etl_telemetry::trace_id_of(tp)
        );
        // Given back on a failed rename, still the announcer's.
        n.abandon(receipt);
        let table = n.inner.announced.lock().expect("lock");
        let a = table
            .get(&("shared".to_string(), "input/a.csv".to_string()))
            .expect("given back");
        assert_eq!(a.user, "up");
    }

    #[test]
    fn late_subscribers_get_recent_events_first() {
        let n = notifier();
        n.upload_completed("etl", "etl", "input/early.csv", 1);
        let (recent, mut rx) = n.subscribe_with_recent();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].event.path, "input/early.csv");
        assert_eq!(&*recent[0].root, "etl");
        n.upload_completed("etl", "etl", "input/late.csv", 2);
        assert_eq!(rx.try_recv().expect("live").event.path, "input/late.csv");
        let (recent, _) = n.subscribe_with_recent();
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn rejections_reach_only_watchers_of_their_directory() {
        let n = notifier();
        assert!(n.is_rejection("error/a.csv"));
        assert!(n.is_rejection("/error/sub/a.csv"));
        assert!(!n.is_rejection("error/a.csv.error.txt"));
        assert!(!n.is_rejection("error/.a.csv.part"));
        assert!(!n.is_rejection("errors/a.csv"));
        assert!(!n.is_rejection("input/a.csv"));
        assert!(!n.is_rejection("error"));

        let (_, mut rx) = n.subscribe_with_recent();
        n.rejected(
            "connect",
            "etl",
            "error/a.csv",
            3,
            "line 2: bad".into(),
            None,
        );
        let notice = rx.try_recv().expect("rejected");
        let ev = &notice.event;
        assert_eq!(ev.kind, FileEventKind::Rejected as i32);
        assert_eq!(ev.reason, "line 2: bad");
        assert_eq!(ev.user, "connect", "the user who moved it");
        assert!(matches(&notice, "etl", "error"));
        assert!(
            !matches(&notice, "etl", ""),
            "an upload watcher never sees it"
        );
        assert!(!matches(&notice, "etl", "input"));
        assert!(!matches(&notice, "other", "error"));
    }

    #[test]
    fn filters_follow_the_root_not_the_uploader() {
        let notice = Notice {
            root: "shared".into(),
            event: FileReady {
                user: "extractor".into(),
                path: "input/x/a.csv".into(),
                ..Default::default()
            },
        };
        assert!(matches(&notice, "shared", ""));
        assert!(matches(&notice, "shared", "input"));
        assert!(matches(&notice, "shared", "/input/x/"));
        assert!(
            !matches(&notice, "extractor", ""),
            "the uploader's name is no root"
        );
        assert!(!matches(&notice, "", ""));
        assert!(!matches(&notice, "shared", "inp"));
        assert_eq!(clean("./input//a.csv"), "input/a.csv");
    }
}
