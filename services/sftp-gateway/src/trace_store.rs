//! The trace context of each completed upload, kept durably beside the file,
//! so whoever finds the file later (a poll, a start-up scan, a restarted
//! source or gateway) joins the file's one trace instead of starting another.
//!
//! The W3C `traceparent` is stored in the user extended attribute
//! [`XATTR_NAME`] of the file itself. An attribute belongs to the inode, so it
//! moves with every rename (`input/` → `finished/` or `error/`), by us or by
//! anyone else on the host, and disappears with the file.
//!
//! Some file systems refuse user attributes (`ENOTSUP`: some network and FUSE
//! mounts, old tmpfs). There the value goes to a gateway-private sidecar
//! instead: `<data-dir>/.trace/<root>/<path>`, outside every root (root names
//! never start with a dot, so no user can reach it). Keyed by root, not by
//! user: every user of a shared root sees the same context for the same file.
//! Sidecars follow the renames and removals done through the gateway, which
//! is all a client can do; a file moved on the host outside the gateway loses
//! its context and its reader starts a new trace, as with any third-party
//! SFTP server. A warning says once that the fallback is in use.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use rustix::{
    fs::{XattrFlags, fgetxattr, fremovexattr, fsetxattr},
    io::Errno,
};

/// The extended attribute that holds a file's `traceparent`.
pub const XATTR_NAME: &str = "user.etl.traceparent";
/// Directory of the fallback store, inside the data directory.
pub(crate) const SIDECAR_DIR: &str = ".trace";
/// Longest value accepted; a W3C traceparent is 55 characters.
const MAX_LEN: usize = 256;

/// Reads and writes the stored trace context of files. Shared by every session.
#[derive(Debug)]
pub(crate) struct TraceStore {
    sidecars: PathBuf,
    /// Attributes are not tried at all (tests of the fallback).
    sidecar_only: bool,
    /// Some sidecar may exist: renames and removals must carry them along.
    sidecars_in_use: AtomicBool,
    warned: AtomicBool,
}

impl TraceStore {
    pub(crate) fn new(data_dir: &Path) -> Self {
        let sidecars = data_dir.join(SIDECAR_DIR);
        let in_use = sidecars.is_dir();
        Self {
            sidecars,
            sidecar_only: false,
            sidecars_in_use: AtomicBool::new(in_use),
            warned: AtomicBool::new(false),
        }
    }

    /// A store that behaves as on a file system without user attributes.
    #[cfg(test)]
    pub(crate) fn sidecar_only(data_dir: &Path) -> Self {
        Self {
            sidecar_only: true,
            ..Self::new(data_dir)
        }
    }

    /// The `traceparent` stored for `file` (at `rel` in root `root`), if any.
    /// Blocking.
    pub(crate) fn get(&self, file: &File, root: &str, rel: &str) -> io::Result<Option<String>> {
        if !self.sidecar_only {
            let mut buf = [0u8; MAX_LEN];
            match fgetxattr(file, XATTR_NAME, &mut buf[..]) {
                Ok(n) => return Ok(valid(&buf[..n])),
                Err(Errno::NODATA) => return Ok(None),
                // Someone else's oversized value: not ours to serve.
                Err(Errno::RANGE) => return Ok(None),
                Err(e) if unsupported(e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match std::fs::read(self.sidecar(root, rel)) {
            Ok(data) => Ok(valid(&data)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `traceparent` for `file`, replacing any earlier value. Blocking.
    pub(crate) fn set(
        &self,
        file: &File,
        root: &str,
        rel: &str,
        traceparent: &str,
    ) -> io::Result<()> {
        if traceparent.is_empty() || traceparent.len() > MAX_LEN {
            return self.clear(file, root, rel);
        }
        if !self.sidecar_only {
            match fsetxattr(
                file,
                XATTR_NAME,
                traceparent.as_bytes(),
                XattrFlags::empty(),
            ) {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(e) => self.warn_fallback(),
                Err(e) => return Err(e.into()),
            }
        }
        self.sidecars_in_use.store(true, Ordering::Relaxed);
        let path = self.sidecar(root, rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Written aside and renamed, so a crash never leaves half a value.
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("tp")
        ));
        std::fs::write(&tmp, traceparent.as_bytes())?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets the value of `file` (its content is being replaced). Blocking.
    pub(crate) fn clear(&self, file: &File, root: &str, rel: &str) -> io::Result<()> {
        if !self.sidecar_only {
            match fremovexattr(file, XATTR_NAME) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) if unsupported(e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.removed(root, rel);
        Ok(())
    }

    /// `from` was renamed to `to` (a file or a whole directory): carries
    /// sidecars along. Attributes need nothing. Blocking; best effort.
    pub(crate) fn moved(&self, root: &str, from: &str, to: &str) {
        if !self.sidecars_in_use.load(Ordering::Relaxed) {
            return;
        }
        let (from, to) = (self.sidecar(root, from), self.sidecar(root, to));
        // Whatever the target held is gone now (replaced by the rename).
        let _ = remove_any(&to);
        if let Some(parent) = to.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => {}
            Err(e) => {
                tracing::warn!(root, from = %from.display(), to = %to.display(), error = %e, "cannot move a trace context sidecar");
            }
        }
    }

    /// `rel` was removed: drops its sidecar. Blocking; best effort.
    pub(crate) fn removed(&self, root: &str, rel: &str) {
        if self.sidecars_in_use.load(Ordering::Relaxed) {
            let _ = remove_any(&self.sidecar(root, rel));
        }
    }

    fn sidecar(&self, root: &str, rel: &str) -> PathBuf {
        // `rel` is normalized (no `..`, no leading `/`): it stays below.
        self.sidecars.join(root).join(rel)
    }

    fn warn_fallback(&self) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                store = %self.sidecars.display(),
                "the file system refuses user extended attributes (ENOTSUP); trace contexts are kept in the gateway's sidecar store instead, which follows only renames done through the gateway"
            );
        }
    }
}

fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// A stored value as served: printable ASCII only, else none.
fn valid(data: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(data).ok()?.trim();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn make(dir: &Path, sidecar_only: bool) -> TraceStore {
        if sidecar_only {
            TraceStore::sidecar_only(dir)
        } else {
            TraceStore::new(dir)
        }
    }

    #[test]
    fn stored_value_follows_a_rename() -> Result<(), Box<dyn std::error::Error>> {
        for sidecar_only in [false, true] {
            let n = sidecar_only;
            let dir = tempfile::tempdir()?;
            let store = make(dir.path(), sidecar_only);
            let root = dir.path().join("etl");
            std::fs::create_dir_all(root.join("input"))?;
            std::fs::create_dir_all(root.join("finished"))?;
            let a = root.join("input/a.csv");
            std::fs::write(&a, "x")?;
            let file = File::open(&a)?;
            assert_eq!(store.get(&file, "etl", "input/a.csv")?, None, "store {n}");
            store.set(&file, "etl", "input/a.csv", TP)?;
            assert_eq!(store.get(&file, "etl", "input/a.csv")?.as_deref(), Some(TP));
            drop(file);

            std::fs::rename(&a, root.join("finished/a.csv"))?;
            store.moved("etl", "input/a.csv", "finished/a.csv");
            let file = File::open(root.join("finished/a.csv"))?;
            assert_eq!(
                store.get(&file, "etl", "finished/a.csv")?.as_deref(),
                Some(TP),
                "store {n}"
            );
            // A new store on the same directory (a restarted gateway) still knows it.
            let again = make(dir.path(), sidecar_only);
            assert_eq!(
                again.get(&file, "etl", "finished/a.csv")?.as_deref(),
                Some(TP),
                "store {n} after restart"
            );
            again.clear(&file, "etl", "finished/a.csv")?;
            assert_eq!(again.get(&file, "etl", "finished/a.csv")?, None);
        }
        Ok(())
    }

    #[test]
    fn sidecars_stay_outside_user_roots() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = TraceStore::sidecar_only(dir.path());
        let root = dir.path().join("etl/input");
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("a.csv"), "x")?;
        let file = File::open(root.join("a.csv"))?;
        store.set(&file, "etl", "input/a.csv", TP)?;
        assert!(dir.path().join(".trace/etl/input/a.csv").is_file());
        store.removed("etl", "input/a.csv");
        assert!(!dir.path().join(".trace/etl/input/a.csv").exists());
        Ok(())
    }

    #[test]
    fn garbage_values_are_not_served() {
        assert_eq!(valid(b""), None);
        assert_eq!(valid(b"a b"), None);
        assert_eq!(valid(&[0xff, 0x00]), None);
        assert_eq!(valid(format!("{TP}\n").as_bytes()).as_deref(), Some(TP));
    }
}
