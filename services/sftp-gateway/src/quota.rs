//! How many bytes each root holds, against its quota, and the size limit of
//! one file. Measured once at start, then kept up to date by the SFTP handler
//! as files grow, shrink and disappear; every session of every user of a root
//! shares one [`Usage`], so parallel uploads cannot overrun it together.
//!
//! The quota is per root, not per user: users who share a root share one
//! directory, and what it holds is what the disk pays for, whoever wrote it.
//! A per-user count would also be wrong the moment one user moves or deletes
//! another's file (the source connector moving the uploader's files to
//! `finished/`), so one user could never free another's share.
//! Sizes are logical (`st_size`): a sparse file counts in full. Each write
//! handle charges the growth it causes as it sees it, so two handles writing
//! the same bytes of one file at once are charged twice until a restart
//! re-measures: the count errs on the safe side, never below what is there.

use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use russh_sftp::{protocol::StatusCode, server::StatusReply};

/// The bytes of one root.
#[derive(Debug)]
pub(crate) struct Usage {
    used: AtomicU64,
    /// 0: no quota.
    quota: u64,
    /// Largest file; 0: no limit.
    max_file: u64,
}

impl Usage {
    /// Measures `root` (blocking; symlinks are not followed).
    pub(crate) fn measure(root: &Path, quota: u64, max_file: u64) -> Self {
        Self {
            used: AtomicU64::new(du(root, 0)),
            quota,
            max_file,
        }
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Checks that a file may reach `new_len` bytes, and reserves the bytes
    /// that takes beyond `old_len`. Refusals are SFTP statuses that say which
    /// limit and how to raise it.
    /// `root` names the root in the refusal.
    pub(crate) fn grow(&self, root: &str, old_len: u64, new_len: u64) -> Result<(), StatusReply> {
        if self.max_file > 0 && new_len > self.max_file {
            return Err(StatusCode::Failure.with_message(format!(
                "file too large: {new_len} bytes exceed the limit of {} bytes per file (--max-file-size)",
                self.max_file
            )));
        }
        let extra = new_len.saturating_sub(old_len);
        if extra == 0 {
            return Ok(());
        }
        let reserved = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let after = used.saturating_add(extra);
                (self.quota == 0 || after <= self.quota).then_some(after)
            });
        reserved.map(|_| ()).map_err(|used| {
            StatusCode::Failure.with_message(format!(
                "quota exceeded: root {root} (shared by its users) stores {used} of {} bytes; {extra} more do not fit (remove files, or raise --user-quota)",
                self.quota
            ))
        })
    }

    /// `n` bytes were freed (a file shrank or went away).
    pub(crate) fn shrink(&self, n: u64) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    Some(used.saturating_sub(n))
                });
        }
    }
}

fn du(path: &Path, depth: usize) -> u64 {
    if depth > 64 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            total = total.saturating_add(du(&entry.path(), depth + 1));
        } else if kind.is_file() {
            total = total.saturating_add(entry.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_enforces() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("a/b"))?;
        std::fs::write(dir.path().join("a/b/x"), vec![0u8; 300])?;
        std::fs::write(dir.path().join("y"), vec![0u8; 200])?;
        let usage = Usage::measure(dir.path(), 1000, 400);
        assert_eq!(usage.used(), 500);
        let err = usage.grow("etl", 0, 401).expect_err("too large");
        let msg = err.error_message.unwrap_or_default();
        assert!(msg.contains("--max-file-size"), "{msg}");
        usage.grow("etl", 0, 400).map_err(|e| format!("{e:?}"))?;
        assert_eq!(usage.used(), 900);
        let err = usage.grow("etl", 100, 250).expect_err("over quota");
        let msg = err.error_message.unwrap_or_default();
        assert!(msg.contains("quota exceeded"), "{msg}");
        assert_eq!(usage.used(), 900, "a refusal reserves nothing");
        usage.grow("etl", 300, 200).map_err(|e| format!("{e:?}"))?;
        usage.shrink(400);
        assert_eq!(usage.used(), 500);
        usage.shrink(10_000);
        assert_eq!(usage.used(), 0);
        Ok(())
    }
}
