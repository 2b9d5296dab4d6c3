//! Live notice of completed uploads. The SFTP handler reports a file when it is
//! closed after writing or renamed into place; if it is in a watched directory
//! and not hidden, a [`FileReady`] goes out on a broadcast channel that gRPC
//! `WatchFiles` streams (and in-process subscribers) read.
//!
//! Announcements (`AnnounceUpload`) map `(user, path)` to the uploader's trace
//! context for a while, so the `sftp.receive` span and the event join the
//! uploader's trace.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etl_proto::v1::{FileReady, TraceContext};
use tokio::sync::broadcast;

/// Name of the span around the handling of one completed upload.
pub const SPAN_RECEIVE: &str = "sftp.receive";
/// How long an announcement waits for its upload.
const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(10 * 60);
/// Announcements kept at most; the oldest go first beyond this.
const MAX_ANNOUNCEMENTS: usize = 100_000;
/// Events buffered per subscriber before it counts as lagging.
const CHANNEL_CAPACITY: usize = 4096;
/// Recent events replayed to each new subscriber, so a consumer that connects
/// after an upload (start order, reconnects) still gets the file's trace context.
const RECENT_MAX: usize = 1024;
const RECENT_TTL: Duration = Duration::from_secs(10 * 60);

struct Announcement {
    trace: TraceContext,
    at: Instant,
}

struct Inner {
    tx: broadcast::Sender<FileReady>,
    watched: Vec<String>,
    announced: Mutex<HashMap<(String, String), Announcement>>,
    recent: Mutex<std::collections::VecDeque<(Instant, FileReady)>>,
}

/// The hub for FileReady events and upload announcements. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Notifier {
    /// `watched`: directories relative to each user's root (`"input"`).
    pub fn new(watched: &[String]) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                tx,
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

    /// Every FileReady from now on. A receiver that falls more than a few
    /// thousand events behind gets `RecvError::Lagged` and then continues.
    pub fn subscribe(&self) -> broadcast::Receiver<FileReady> {
        self.inner.tx.subscribe()
    }

    /// Every FileReady from now on, preceded by the recent ones (at most
    /// [`RECENT_MAX`], none older than ten minutes). Subscribing before reading
    /// the backlog means no event falls between the two; one may come twice,
    /// which consumers tolerate (the file is gone after the first).
    pub fn subscribe_with_recent(&self) -> (Vec<FileReady>, broadcast::Receiver<FileReady>) {
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

    /// Remembers the uploader's trace context for `(user, path)`.
    pub fn announce(&self, user: &str, path: &str, trace: TraceContext) {
        let key = (user.to_string(), clean(path));
        let now = Instant::now();
        let Ok(mut table) = self.inner.announced.lock() else {
            return;
        };
        table.retain(|_, a| now.duration_since(a.at) < ANNOUNCEMENT_TTL);
        if table.len() >= MAX_ANNOUNCEMENTS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, a)| a.at)
                .map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
        }
        tracing::debug!(user, path = %key.1, traceparent = %trace.traceparent, "upload announced");
        table.insert(key, Announcement { trace, at: now });
    }

    fn take_announcement(&self, user: &str, path: &str) -> Option<TraceContext> {
        let mut table = self.inner.announced.lock().ok()?;
        let a = table.remove(&(user.to_string(), path.to_string()))?;
        (a.at.elapsed() < ANNOUNCEMENT_TTL).then_some(a.trace)
    }

    /// Whether a completed file at `rel` (relative to the user's root) is
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

    /// Called by the SFTP handler when `user` finished writing `rel`.
    pub(crate) fn upload_completed(&self, user: &str, rel: &str, size: u64) {
        if !self.is_watched(rel) {
            tracing::debug!(user, path = rel, size, "file written (not watched)");
            return;
        }
        let announced = self.take_announcement(user, rel);
        // A root span unless the uploader announced its trace: a file from a
        // plain SFTP client (no extractor) gets a trace that starts here.
        let span = tracing::info_span!(
            parent: None,
            "sftp.receive",
            otel.kind = "consumer",
            sftp.user = %user,
            file.path = %rel,
            file.size = size,
        );
        if let Some(trace) = &announced {
            etl_telemetry::context::set_parent(&span, &trace.traceparent);
        }
        let _entered = span.enter();
        // The event carries this span's context, so the consumer's work nests
        // under the gateway's hop, in the uploader's trace when there is one.
        let traceparent = etl_telemetry::context::traceparent_of(&span)
            .or_else(|| announced.as_ref().map(|a| a.traceparent.clone()))
            .unwrap_or_default();
        let trace = TraceContext {
            traceparent,
            tracestate: announced.map(|a| a.tracestate).unwrap_or_default(),
        };
        let event = FileReady {
            user: user.to_string(),
            path: rel.to_string(),
            size,
            completed_at_unix_ms: unix_ms(),
            trace: Some(trace),
        };
        if let Ok(mut recent) = self.inner.recent.lock() {
            while recent.len() >= RECENT_MAX
                || recent
                    .front()
                    .is_some_and(|(at, _)| at.elapsed() >= RECENT_TTL)
            {
                recent.pop_front();
            }
            recent.push_back((Instant::now(), event.clone()));
        }
        let subscribers = self.inner.tx.send(event).unwrap_or(0);
        tracing::info!(user, path = rel, size, subscribers, "upload complete");
    }
}

/// Whether `event` passes a `WatchFiles` filter (empty = any).
pub(crate) fn matches(event: &FileReady, user: &str, directory: &str) -> bool {
    if !user.is_empty() && event.user != user {
        return false;
    }
    let directory = directory.trim_matches('/');
    directory.is_empty()
        || event
            .path
            .strip_prefix(directory)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A client path as the table keys it: relative, no `./` or doubled slashes.
pub(crate) fn clean(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
    fn completed_upload_published_with_announced_trace() {
        etl_telemetry::init_for_tests();
        let n = notifier();
        let mut rx = n.subscribe();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        n.announce(
            "etl",
            "/input/a.csv",
            TraceContext {
                traceparent: tp.into(),
                tracestate: String::new(),
            },
        );
        n.upload_completed("etl", "input/.a.csv.part", 3);
        n.upload_completed("etl", "input/a.csv", 3);
        n.upload_completed("etl", "input/b.csv", 4);
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
    fn late_subscribers_get_recent_events_first() {
        let n = notifier();
        n.upload_completed("etl", "input/early.csv", 1);
        let (recent, mut rx) = n.subscribe_with_recent();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].path, "input/early.csv");
        n.upload_completed("etl", "input/late.csv", 2);
        assert_eq!(rx.try_recv().expect("live").path, "input/late.csv");
        let (recent, _) = n.subscribe_with_recent();
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn filters() {
        let ev = FileReady {
            user: "etl".into(),
            path: "input/x/a.csv".into(),
            ..Default::default()
        };
        assert!(matches(&ev, "", ""));
        assert!(matches(&ev, "etl", "input"));
        assert!(matches(&ev, "etl", "/input/x/"));
        assert!(!matches(&ev, "other", ""));
        assert!(!matches(&ev, "", "inp"));
        assert_eq!(clean("./input//a.csv"), "input/a.csv");
    }
}
