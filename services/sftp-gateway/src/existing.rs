//! Files already present, as events: what `WatchFiles` with
//! `include_existing` sends first, so a subscriber that was down (or starts
//! after the uploads) misses nothing and still gets each file's stored trace
//! context. In `error/` the events are REJECTED, with their reasons.
//!
//! A listing covers the subscriber's root, whoever put the files there. Who
//! uploaded a file is not kept with it, so a listed event's `user` is the
//! subscriber's; a recent live event of the same file, which names its
//! uploader, is sent in its place when there is one (see `api`).

use std::time::UNIX_EPOCH;

use etl_proto::v1::{FileEventKind, FileReady, TraceContext};

use crate::{
    notify::Notifier,
    sftp::read_reason,
    trace_store::TraceStore,
    tree::{ERROR_DIR, UserTree},
};

/// Files listed at most per request; a larger backlog is cut (with a
/// warning) and the rest is found by the subscriber's own scan.
const MAX_FILES: usize = 100_000;
/// How deep below the requested directory files are looked for.
const MAX_DEPTH: usize = 16;

/// One event per regular, non-hidden file below `directory` (empty: each
/// watched directory) of `tree`, the root of the subscribing `user`, oldest
/// first. Blocking.
pub(crate) fn existing_events(
    tree: &UserTree,
    store: &TraceStore,
    notifier: &Notifier,
    user: &str,
    directory: &str,
) -> Vec<FileReady> {
    let dirs: Vec<String> = if directory.is_empty() {
        notifier.watched_dirs().to_vec()
    } else {
        vec![directory.to_string()]
    };
    let mut found = Vec::new();
    for dir in &dirs {
        let rejected = dir == ERROR_DIR || dir.starts_with(&format!("{ERROR_DIR}/"));
        let Ok(resolved) = tree.resolve(dir) else {
            continue;
        };
        let mut files = Vec::new();
        walk(tree, &resolved.rel, 0, &mut files);
        for (rel, size, mtime_ms) in files {
            if found.len() >= MAX_FILES {
                tracing::warn!(
                    root = tree.name(),
                    directory = %dir,
                    limit = MAX_FILES,
                    "too many existing files to list; the rest come with the subscriber's scan"
                );
                break;
            }
            if rejected && !notifier.is_rejection(&rel) {
                continue;
            }
            let traceparent = tree
                .open_read(&rel)
                .ok()
                .and_then(|file| store.get(&file, tree.name(), &rel).ok().flatten());
            let (kind, reason) = if rejected {
                (FileEventKind::Rejected, read_reason(tree, &rel))
            } else {
                (FileEventKind::Uploaded, String::new())
            };
            found.push(FileReady {
                user: user.to_string(),
                path: rel,
                size,
                completed_at_unix_ms: mtime_ms,
                trace: traceparent.map(|traceparent| TraceContext {
                    traceparent,
                    tracestate: String::new(),
                }),
                kind: kind as i32,
                reason,
            });
        }
    }
    found.sort_by(|a, b| (a.completed_at_unix_ms, &a.path).cmp(&(b.completed_at_unix_ms, &b.path)));
    found
}

/// Regular files below `rel`, skipping hidden names and symlinks, with
/// their size and modification time in ms.
fn walk(tree: &UserTree, rel: &str, depth: usize, out: &mut Vec<(String, u64, i64)>) {
    if depth > MAX_DEPTH || out.len() > MAX_FILES {
        return;
    }
    let Ok(entries) = tree.read_dir(rel) else {
        return;
    };
    for (name, meta) in entries {
        if name.starts_with('.') {
            continue;
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if meta.is_dir() {
            walk(tree, &child, depth + 1, out);
        } else if meta.is_file() {
            let mtime_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            out.push((child, meta.len(), mtime_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_oldest_first_with_context_and_reasons() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let tree = UserTree::create(dir.path(), "etl")?;
        let store = TraceStore::new(dir.path());
        let notifier = Notifier::new(&["input".to_string()]);
        let root = dir.path().join("etl");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

        std::fs::write(root.join("input/b.csv"), "bb")?;
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let a = std::fs::File::create(root.join("input/a.csv"))?;
        a.set_modified(old)?;
        store.set(&a, "etl", "input/a.csv", tp)?;
        drop(a);
        std::fs::write(root.join("input/.c.csv.part"), "partial")?;
        std::fs::write(root.join("error/x.csv"), "x")?;
        std::fs::write(root.join("error/x.csv.error.txt"), "line 2: bad\n")?;

        let input = existing_events(&tree, &store, &notifier, "connect", "");
        let paths: Vec<_> = input.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["input/a.csv", "input/b.csv"],
            "oldest first, no hidden"
        );
        assert_eq!(
            input[0].trace.as_ref().map(|t| t.traceparent.as_str()),
            Some(tp)
        );
        assert!(input[1].trace.is_none());
        assert_eq!(input[0].user, "connect", "the subscriber's");

        let errors = existing_events(&tree, &store, &notifier, "connect", "error");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "error/x.csv");
        assert_eq!(errors[0].kind, FileEventKind::Rejected as i32);
        assert_eq!(errors[0].reason, "line 2: bad");
        Ok(())
    }
}
