//! The SFTP v3 file operations of one session, on top of the user's
//! [`UserTree`] (its root, which other users may share). Every path is
//! normalized, checked against the user's [`Profile`] when it would change
//! something, and reached beneath the root without following symlinks (see
//! `tree`); file system work runs on blocking threads; errors become the
//! status codes OpenSSH's client understands (`NoSuchFile`,
//! `PermissionDenied`, `Failure`, …). Growth is charged to the root's quota
//! and bounded by the file size limit (see `quota`). Trace contexts and
//! notices are keyed by the root; the login user names who did what.
//!
//! A handle opened for writing counts as an in-flight upload until it is
//! closed; shutdown waits for those (see [`Uploads`]). Closing such a handle, or
//! renaming a file into place, reports the file to the [`Notifier`], after its
//! trace context is stored with it ([`TraceStore`]).

use std::{
    collections::{HashMap, VecDeque},
    fs::Metadata,
    io,
    sync::Arc,
};

use etl_service::Shutdown;
use russh_sftp::{
    protocol::{
        Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
        StatusCode, Version,
    },
    server::StatusReply,
};
use rustix::fs::OFlags;
use tokio::sync::watch;

use crate::{
    config::Profile,
    notify::{Notifier, REASON_MAX, REASON_SUFFIX, Receipt},
    trace_store::TraceStore,
    tree::{PathError, UserTree, is_refused_walk, normalize},
};

/// Largest READ answered at once, as OpenSSH's sftp-server (256 KiB less
/// room for the header), so any client's packet limit holds.
const MAX_READ: u32 = 256 * 1024 - 1024;
/// Open handles per session; a client that leaks handles is refused, not us.
const MAX_HANDLES: usize = 512;
/// Directory entries per READDIR answer.
const READDIR_BATCH: usize = 128;
const POSIX_RENAME: &str = "posix-rename@openssh.com";
/// SSH_FXP_EXTENDED request for the stored trace context of a file: data is
/// the path (an SSH string), the EXTENDED_REPLY data is its W3C
/// `traceparent` (empty when none). Advertised in the VERSION packet.
pub(crate) const TRACEPARENT_EXTENSION: &str = "traceparent@file-etl";

/// Counts handles open for writing across a connection, so shutdown can let
/// in-flight uploads finish before it disconnects.
#[derive(Clone)]
pub(crate) struct Uploads(Arc<watch::Sender<usize>>);

impl Uploads {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    fn start(&self) -> UploadGuard {
        self.0.send_modify(|n| *n += 1);
        UploadGuard(self.0.clone())
    }

    /// Handles open for writing now.
    pub(crate) fn open(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves when no handle is open for writing.
    pub(crate) async fn idle(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// One in-flight upload; dropping it (close, or a session that died) ends it.
struct UploadGuard(Arc<watch::Sender<usize>>);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

struct OpenFile {
    file: Arc<std::fs::File>,
    rel: String,
    upload: Option<UploadGuard>,
    /// Created, truncated or written through this handle.
    dirty: bool,
    /// Size as this handle knows it: what the quota has been charged for.
    len: u64,
}

enum OpenHandle {
    File(OpenFile),
    Dir(VecDeque<File>),
}

/// The russh-sftp server handler of one session.
pub(crate) struct SftpHandler {
    /// Who logged in.
    user: String,
    tree: Arc<UserTree>,
    notifier: Notifier,
    store: Arc<TraceStore>,
    profile: Profile,
    shutdown: Shutdown,
    uploads: Uploads,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

/// What one session works with, besides its user's tree.
pub(crate) struct SessionContext {
    /// The login user.
    pub(crate) user: String,
    pub(crate) notifier: Notifier,
    pub(crate) store: Arc<TraceStore>,
    pub(crate) profile: Profile,
    pub(crate) shutdown: Shutdown,
    pub(crate) uploads: Uploads,
}

impl SftpHandler {
    pub(crate) fn new(tree: Arc<UserTree>, cx: SessionContext) -> Self {
        Self {
            user: cx.user,
            tree,
            notifier: cx.notifier,
            store: cx.store,
            profile: cx.profile,
            shutdown: cx.shutdown,
            uploads: cx.uploads,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn user(&self) -> &str {
        &self.user
    }

    fn insert(&mut self, handle: OpenHandle) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles; close some"));
        }
        self.next_handle += 1;
        let name = self.next_handle.to_string();
        self.handles.insert(name.clone(), handle);
        Ok(name)
    }

    fn file(&self, handle: &str) -> Result<&OpenFile, StatusReply> {
        match self.handles.get(handle) {
            Some(OpenHandle::File(f)) => Ok(f),
            Some(OpenHandle::Dir(_)) => {
                Err(StatusCode::Failure.with_message("handle is a directory"))
            }
            None => Err(invalid_handle()),
        }
    }

    /// `path` relative to the root, or the status that refuses it.
    fn rel(&self, path: &str) -> Result<String, StatusReply> {
        self.tree
            .resolve(path)
            .map(|r| r.rel)
            .map_err(|e| path_status(self.user(), path, e))
    }

    /// Refuses a change at `rel` that the user's profile does not allow.
    fn check_write(&self, rel: &str) -> Result<(), StatusReply> {
        let allowed = match self.profile {
            Profile::Full => true,
            Profile::Upload => self.notifier.is_inside_watched(rel),
            Profile::Read => false,
        };
        if allowed {
            return Ok(());
        }
        tracing::warn!(user = self.user(), path = rel, profile = ?self.profile, "refused a change the user's permissions do not allow");
        let may = match self.profile {
            Profile::Upload => format!(
                "it may change files only inside {}",
                self.notifier
                    .watched_dirs()
                    .iter()
                    .map(|d| format!("{d}/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "it may only read".into(),
        };
        Err(StatusCode::PermissionDenied.with_message(format!(
            "Permission denied: user {} may not change /{rel} ({may})",
            self.user()
        )))
    }

    /// Resolves `path`, checks write permission when `writes`, and runs `op`
    /// on a blocking thread with the tree and the relative path.
    async fn on_path<T, F>(&self, path: String, writes: bool, op: F) -> Result<T, StatusReply>
    where
        T: Send + 'static,
        F: FnOnce(&UserTree, String) -> Result<T, StatusReply> + Send + 'static,
    {
        let rel = self.rel(&path)?;
        if writes {
            self.check_write(&rel)?;
        }
        let tree = self.tree.clone();
        blocking(move || op(&tree, rel)).await
    }

    /// Renames, and tells the [`Notifier`] when the new name is an upload
    /// (watched) or a rejection (in `error/`). For an upload the trace context
    /// is stored on the file before the rename, so a reader that finds the
    /// file by listing (not by the event) already finds its context.
    async fn do_rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, StatusReply> {
        let from = self.rel(&oldpath)?;
        let to = self.rel(&newpath)?;
        if from.is_empty() || to.is_empty() {
            return Err(
                StatusCode::PermissionDenied.with_message("cannot rename the root directory")
            );
        }
        self.check_write(&from)?;
        self.check_write(&to)?;
        let tree = self.tree.clone();
        let user = self.user().to_string();
        let notifier = self.notifier.clone();
        let store = self.store.clone();
        let (rel, outcome) = blocking(move || {
            let root = tree.name();
            let meta = tree.lstat(&from).map_err(|e| io_status(&e))?;
            // A file replaced by the rename frees its bytes.
            let replaced = tree
                .lstat(&to)
                .ok()
                .filter(|t| t.is_file() && !same_inode(t, &meta))
                .map_or(0, |t| t.len());
            let rejection = meta.is_file() && notifier.is_rejection(&to);
            let receipt = if meta.is_file() && !rejection {
                receive_moved(&notifier, &store, &tree, &user, &from, &to, meta.len())
            } else {
                None
            };
            // POSIX semantics (an existing target is replaced), as OpenSSH's
            // posix-rename: uploaders rename over older files of the same name.
            if let Err(e) = tree.rename(&from, &to) {
                if let Some(receipt) = receipt {
                    notifier.abandon(receipt);
                }
                return Err(io_status(&e));
            }
            tree.usage().shrink(replaced);
            store.moved(root, &from, &to);
            let outcome = match receipt {
                Some(receipt) => Moved::Upload(receipt),
                None if rejection => Moved::Rejection {
                    size: meta.len(),
                    reason: read_reason(&tree, &to),
                    traceparent: tree
                        .open_read(&to)
                        .and_then(|file| store.get(&file, root, &to))
                        .unwrap_or_default(),
                },
                None => Moved::Other,
            };
            Ok((to, outcome))
        })
        .await?;
        tracing::debug!(user = self.user(), path = %rel, "renamed");
        match outcome {
            Moved::Upload(receipt) => self.notifier.publish(receipt),
            Moved::Rejection {
                size,
                reason,
                traceparent,
            } => self.notifier.rejected(
                self.user(),
                self.tree.name(),
                &rel,
                size,
                reason,
                traceparent,
            ),
            Moved::Other => {}
        }
        Ok(ok(id))
    }
}

/// What a rename turned out to be.
enum Moved {
    Upload(Receipt),
    Rejection {
        size: u64,
        reason: String,
        traceparent: Option<String>,
    },
    Other,
}

fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// A file that `user` is about to rename to `to`: if that is watched, starts
/// its receipt and stores the receipt's trace context on the file (it keeps a
/// context it already had as parent, see [`Notifier::receive`]).
fn receive_moved(
    notifier: &Notifier,
    store: &TraceStore,
    tree: &UserTree,
    user: &str,
    from: &str,
    to: &str,
    size: u64,
) -> Option<Receipt> {
    if !notifier.is_watched(to) {
        return None;
    }
    let root = tree.name();
    let file = match tree.open_read(from) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(user, path = from, error = %e, "cannot open the file to store its trace context");
            None
        }
    };
    let inherited = file
        .as_ref()
        .and_then(|f| store.get(f, root, from).ok().flatten());
    let receipt = notifier.receive(user, root, to, size, inherited.as_deref())?;
    if let Some(file) = &file
        && let Err(e) = store.set(file, root, from, &receipt.trace.traceparent)
    {
        tracing::warn!(user, path = to, error = %e, "cannot store the trace context with the file");
    }
    Some(receipt)
}

/// The content of `<rel>.error.txt` beside a rejected file, at most
/// [`REASON_MAX`] bytes; empty when there is none. Opened beneath the root
/// like any client path, so a reason cannot show a file from elsewhere.
pub(crate) fn read_reason(tree: &UserTree, rel: &str) -> String {
    use std::io::Read;
    let Ok(reason) = tree.open_file(&format!("{rel}{REASON_SUFFIX}"), OFlags::RDONLY) else {
        return String::new();
    };
    let mut data = Vec::with_capacity(1024);
    if (&reason)
        .take(REASON_MAX as u64)
        .read_to_end(&mut data)
        .is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&data);
    // A character cut at the limit shows as U+FFFD: drop it.
    let text = if data.len() == REASON_MAX {
        text.trim_end_matches('\u{fffd}')
    } else {
        &text
    };
    text.trim_end().to_string()
}

/// SFTP open flags as `open(2)` flags, as OpenSSH's sftp-server maps them:
/// no access flag means read; create or truncate without append means write.
/// `O_TRUNC` is left out: the handler truncates itself, to credit the quota.
fn open_flags(pflags: OpenFlags) -> OFlags {
    let read = pflags.contains(OpenFlags::READ)
        || !pflags.intersects(OpenFlags::READ | OpenFlags::WRITE | OpenFlags::APPEND);
    let write = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND)
        || (pflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE)
            && !pflags.contains(OpenFlags::APPEND));
    let mut flags = match (read, write) {
        (true, true) => OFlags::RDWR,
        (false, true) => OFlags::WRONLY,
        _ => OFlags::RDONLY,
    };
    if pflags.contains(OpenFlags::APPEND) {
        flags |= OFlags::APPEND;
    }
    if pflags.contains(OpenFlags::CREATE) {
        flags |= OFlags::CREATE;
        if pflags.contains(OpenFlags::EXCLUDE) {
            flags |= OFlags::EXCL;
        }
    }
    flags
}

impl russh_sftp::server::Handler for SftpHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.with_message("operation not supported by this server")
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        tracing::debug!(
            user = self.user(),
            client_version = version,
            "sftp session started"
        );
        let mut v = Version::new();
        v.extensions.insert(POSIX_RENAME.into(), "1".into());
        v.extensions
            .insert(TRACEPARENT_EXTENSION.into(), "1".into());
        Ok(v)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let writes = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        if writes && self.shutdown.is_triggered() {
            return Err(
                StatusCode::Failure.with_message("server is shutting down; upload again later")
            );
        }
        let (file, rel, len) = self
            .on_path(filename, writes, move |tree, rel| {
                let file = tree
                    .open_file(&rel, open_flags(pflags))
                    .map_err(|e| io_status(&e))?;
                let mut len = file.metadata().map_err(|e| io_status(&e))?.len();
                if pflags.contains(OpenFlags::TRUNCATE) && len > 0 {
                    file.set_len(0).map_err(|e| io_status(&e))?;
                    tree.usage().shrink(len);
                    len = 0;
                }
                Ok((file, rel, len))
            })
            .await?;
        let upload = writes.then(|| self.uploads.start());
        let dirty = pflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
        tracing::debug!(user = self.user(), path = %rel, writes, "open");
        let handle = self.insert(OpenHandle::File(OpenFile {
            file: Arc::new(file),
            rel,
            upload,
            dirty,
            len,
        }))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            None => Err(invalid_handle()),
            Some(OpenHandle::Dir(_)) => Ok(ok(id)),
            Some(OpenHandle::File(open)) => {
                let OpenFile {
                    file,
                    rel,
                    upload,
                    dirty,
                    len,
                } = open;
                if upload.is_some() {
                    let notifier = self.notifier.clone();
                    let store = self.store.clone();
                    let tree = self.tree.clone();
                    let user = self.user.clone();
                    let receipt = blocking(move || {
                        let (user, root) = (user.as_str(), tree.name());
                        let size = file.metadata().map_err(|e| io_status(&e))?.len();
                        // Charged for more than is there (another handle cut it): give back.
                        tree.usage().shrink(len.saturating_sub(size));
                        if !dirty {
                            return Ok(None);
                        }
                        let receipt = notifier.receive(user, root, &rel, size, None);
                        // New content: the context it stores is this upload's
                        // (or none, outside watched directories).
                        let stored = match &receipt {
                            Some(r) => store.set(&file, root, &rel, &r.trace.traceparent),
                            None => store.clear(&file, root, &rel),
                        };
                        if let Err(e) = stored {
                            tracing::warn!(user, path = %rel, error = %e, "cannot store the trace context with the file");
                        }
                        drop(file);
                        Ok(receipt)
                    })
                    .await?;
                    if let Some(receipt) = receipt {
                        self.notifier.publish(receipt);
                    }
                }
                // The upload counts as in flight until its event is out.
                drop(upload);
                Ok(ok(id))
            }
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?.file.clone();
        let len = len.min(MAX_READ) as usize;
        blocking(move || {
            let mut data = vec![0u8; len];
            let n = read_full_at(&file, &mut data, offset).map_err(|e| io_status(&e))?;
            if n == 0 && len > 0 {
                return Err(StatusCode::Eof.into());
            }
            data.truncate(n);
            Ok(Data { id, data })
        })
        .await
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let open = self.file(&handle)?;
        if open.upload.is_none() {
            return Err(
                StatusCode::PermissionDenied.with_message("file was not opened for writing")
            );
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| StatusCode::BadMessage.with_message("offset out of range"))?;
        let before = open.len;
        if let Err(refused) = self.tree.usage().grow(self.tree.name(), before, end) {
            tracing::warn!(user = self.user(), path = %open.rel, size = end, reason = ?refused.error_message, "write refused");
            return Err(refused);
        }
        let file = open.file.clone();
        let written =
            blocking(move || write_all_at(&file, &data, offset).map_err(|e| io_status(&e))).await;
        if let Err(e) = written {
            self.tree.usage().shrink(end.saturating_sub(before));
            return Err(e);
        }
        if let Some(OpenHandle::File(open)) = self.handles.get_mut(&handle) {
            open.dirty = true;
            open.len = open.len.max(end);
        }
        Ok(ok(id))
    }

    /// Symbolic links are never followed, so `stat` describes what `lstat`
    /// does: the entry itself.
    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let user = self.user().to_string();
        self.on_path(path, false, move |tree, rel| {
            let meta = tree.lstat(&rel).map_err(|e| io_status(&e))?;
            Ok(Attrs {
                id,
                attrs: attrs(&meta, &user),
            })
        })
        .await
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.lstat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let file = self.file(&handle)?.file.clone();
        let user = self.user().to_string();
        blocking(move || {
            let meta = file.metadata().map_err(|e| io_status(&e))?;
            Ok(Attrs {
                id,
                attrs: attrs(&meta, &user),
            })
        })
        .await
    }

    /// Size changes are applied (within the quota and the file size limit);
    /// owner, permissions and times are accepted and ignored (the gateway
    /// owns its files), so `put -p` works.
    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let Some(size) = attrs.size else {
            let rel = self.rel(&path)?;
            let tree = self.tree.clone();
            return blocking(move || {
                tree.lstat(&rel).map_err(|e| io_status(&e))?;
                Ok(ok(id))
            })
            .await;
        };
        self.on_path(path, true, move |tree, rel| {
            let meta = tree.lstat(&rel).map_err(|e| io_status(&e))?;
            if meta.is_file() && size != meta.len() {
                let file = tree
                    .open_file(&rel, OFlags::WRONLY)
                    .map_err(|e| io_status(&e))?;
                resize(tree, &file, size)?;
            }
            Ok(ok(id))
        })
        .await
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let open = self.file(&handle)?;
        if let Some(size) = attrs.size {
            if open.upload.is_none() {
                return Err(
                    StatusCode::PermissionDenied.with_message("file was not opened for writing")
                );
            }
            let file = open.file.clone();
            let tree = self.tree.clone();
            blocking(move || resize(&tree, &file, size)).await?;
            if let Some(OpenHandle::File(open)) = self.handles.get_mut(&handle) {
                open.len = size;
                open.dirty = true;
            }
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let user = self.user().to_string();
        let entries = self
            .on_path(path, false, move |tree, rel| {
                let mut entries: Vec<File> = tree
                    .read_dir(&rel)
                    .map_err(|e| io_status(&e))?
                    .into_iter()
                    .map(|(name, meta)| File::new(name, attrs(&meta, &user)))
                    .collect();
                entries.sort_by(|a, b| a.filename.cmp(&b.filename));
                Ok(entries)
            })
            .await?;
        let handle = self.insert(OpenHandle::Dir(entries.into()))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Dir(entries)) if entries.is_empty() => Err(StatusCode::Eof.into()),
            Some(OpenHandle::Dir(entries)) => {
                let n = entries.len().min(READDIR_BATCH);
                Ok(Name {
                    id,
                    files: entries.drain(..n).collect(),
                })
            }
            Some(OpenHandle::File(_)) => {
                Err(StatusCode::Failure.with_message("handle is not a directory"))
            }
            None => Err(invalid_handle()),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let store = self.store.clone();
        self.on_path(filename, true, move |tree, rel| {
            let meta = tree.lstat(&rel).map_err(|e| io_status(&e))?;
            if meta.is_dir() {
                return Err(StatusCode::Failure.with_message("is a directory (use rmdir)"));
            }
            tree.remove_file(&rel).map_err(|e| io_status(&e))?;
            if meta.is_file() {
                tree.usage().shrink(meta.len());
            }
            store.removed(tree.name(), &rel);
            Ok(ok(id))
        })
        .await
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.on_path(path, true, move |tree, rel| {
            tree.mkdir(&rel).map_err(|e| io_status(&e))?;
            Ok(ok(id))
        })
        .await
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let store = self.store.clone();
        self.on_path(path, true, move |tree, rel| {
            if rel.is_empty() {
                return Err(
                    StatusCode::PermissionDenied.with_message("cannot remove the root directory")
                );
            }
            tree.remove_dir(&rel).map_err(|e| io_status(&e))?;
            store.removed(tree.name(), &rel);
            Ok(ok(id))
        })
        .await
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let rel = normalize(&path).map_err(|e| path_status(self.user(), &path, e))?;
        Ok(Name {
            id,
            files: vec![File::dummy(format!("/{rel}"))],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        self.do_rename(id, oldpath, newpath).await
    }

    async fn readlink(&mut self, _id: u32, _path: String) -> Result<Name, Self::Error> {
        Err(StatusCode::OpUnsupported.with_message("symbolic links are not supported"))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        _linkpath: String,
        _targetpath: String,
    ) -> Result<Status, Self::Error> {
        Err(StatusCode::OpUnsupported.with_message("symbolic links are not supported"))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        let mut rest = data.as_slice();
        match request.as_str() {
            POSIX_RENAME => {
                let (Some(old), Some(new)) = (ssh_string(&mut rest), ssh_string(&mut rest)) else {
                    return Err(StatusCode::BadMessage.with_message("posix-rename needs two paths"));
                };
                self.do_rename(id, old, new).await.map(Packet::Status)
            }
            TRACEPARENT_EXTENSION => {
                let Some(path) = ssh_string(&mut rest) else {
                    return Err(StatusCode::BadMessage
                        .with_message(format!("{TRACEPARENT_EXTENSION} needs a path")));
                };
                let store = self.store.clone();
                self.on_path(path, false, move |tree, rel| {
                    let file = tree.open_read(&rel).map_err(|e| io_status(&e))?;
                    let traceparent = store
                        .get(&file, tree.name(), &rel)
                        .map_err(|e| io_status(&e))?;
                    Ok(Packet::ExtendedReply(ExtendedReply {
                        id,
                        data: traceparent.unwrap_or_default().into_bytes(),
                    }))
                })
                .await
            }
            _ => Err(StatusCode::OpUnsupported
                .with_message(format!("extension {request} is not supported"))),
        }
    }
}

/// Sets the length of `file` to `size`, charging or crediting the quota.
fn resize(tree: &UserTree, file: &std::fs::File, size: u64) -> Result<(), StatusReply> {
    let old = file.metadata().map_err(|e| io_status(&e))?.len();
    tree.usage().grow(tree.name(), old, size)?;
    if let Err(e) = file.set_len(size) {
        tree.usage().shrink(size.saturating_sub(old));
        return Err(io_status(&e));
    }
    tree.usage().shrink(old.saturating_sub(size));
    Ok(())
}

/// Runs blocking file system work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, StatusReply>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StatusReply> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StatusCode::Failure.with_message(format!("internal error: {e}"))))
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en-US".into(),
    }
}

fn invalid_handle() -> StatusReply {
    StatusCode::Failure.with_message("invalid handle")
}

/// Attributes as the client sees them; owner and group show the SFTP user.
fn attrs(meta: &Metadata, user: &str) -> FileAttributes {
    let mut attrs = FileAttributes::from(meta);
    attrs.user = Some(user.to_string());
    attrs.group = Some(user.to_string());
    attrs
}

/// The status OpenSSH's sftp-server would send for the same errno; a walk
/// the kernel refused (a symlink on the way) is a permission matter.
fn io_status(e: &io::Error) -> StatusReply {
    use io::ErrorKind as K;
    if is_refused_walk(e) {
        return StatusCode::PermissionDenied.with_message(
            "Permission denied: symbolic links are not followed and paths may not leave the user's root",
        );
    }
    match e.kind() {
        K::NotFound | K::NotADirectory => {
            StatusCode::NoSuchFile.with_message("No such file or directory")
        }
        K::PermissionDenied => StatusCode::PermissionDenied.with_message("Permission denied"),
        K::AlreadyExists => StatusCode::Failure.with_message("File exists"),
        K::IsADirectory => StatusCode::Failure.with_message("Is a directory"),
        K::DirectoryNotEmpty => StatusCode::Failure.with_message("Directory not empty"),
        K::InvalidInput | K::InvalidFilename => StatusCode::BadMessage.with_message(e.to_string()),
        _ => StatusCode::Failure.with_message(e.to_string()),
    }
}

fn path_status(user: &str, path: &str, e: PathError) -> StatusReply {
    match e {
        PathError::Escape => {
            tracing::warn!(user, path, "refused a path outside the user's root");
            StatusCode::PermissionDenied
                .with_message("Permission denied: path is outside the user's root")
        }
        PathError::Invalid(why) => StatusCode::BadMessage.with_message(why),
    }
}

/// One SSH `string` (u32 length, then bytes) from the front of `data`.
fn ssh_string(data: &mut &[u8]) -> Option<String> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    *data = rest;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(unix)]
fn read_full_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(unix)]
fn write_all_at(file: &std::fs::File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_strings_parse() {
        let mut data = Vec::new();
        for s in ["a/b", "c"] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let mut rest = data.as_slice();
        assert_eq!(ssh_string(&mut rest).as_deref(), Some("a/b"));
        assert_eq!(ssh_string(&mut rest).as_deref(), Some("c"));
        assert_eq!(ssh_string(&mut rest), None);
        let mut short: &[u8] = &[0, 0, 0, 9, b'x'];
        assert_eq!(ssh_string(&mut short), None);
    }

    #[test]
    fn errnos_map_like_openssh() {
        let code = |k: io::ErrorKind| io_status(&io::Error::from(k)).status_code;
        assert_eq!(code(io::ErrorKind::NotFound), StatusCode::NoSuchFile);
        assert_eq!(
            code(io::ErrorKind::PermissionDenied),
            StatusCode::PermissionDenied
        );
        assert_eq!(code(io::ErrorKind::AlreadyExists), StatusCode::Failure);
    }

    #[tokio::test]
    async fn uploads_idle_after_guards_drop() {
        let uploads = Uploads::new();
        let guard = uploads.start();
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), uploads.idle()).await;
        assert!(idle.is_err(), "not idle while an upload is open");
        drop(guard);
        let idle = tokio::time::timeout(std::time::Duration::from_secs(1), uploads.idle()).await;
        assert!(idle.is_ok());
    }
}
