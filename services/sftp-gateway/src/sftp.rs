//! The SFTP v3 file operations of one session, on top of the user's
//! [`UserTree`]. Every path goes through [`UserTree::resolve`]; file system
//! work runs on blocking threads; errors become the status codes OpenSSH's
//! client understands (`NoSuchFile`, `PermissionDenied`, `Failure`, …).
//!
//! A handle opened for writing counts as an in-flight upload until it is
//! closed; shutdown waits for those (see [`Uploads`]). Closing such a handle, or
//! renaming a file into place, reports the file to the [`Notifier`].

use std::{
    collections::{HashMap, VecDeque},
    fs::{Metadata, OpenOptions},
    io,
    sync::Arc,
};

use etl_service::Shutdown;
use russh_sftp::{
    protocol::{
        Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode,
        Version,
    },
    server::StatusReply,
};
use tokio::sync::watch;

use crate::{
    notify::Notifier,
    tree::{PathError, Resolved, UserTree, normalize},
};

/// Largest READ answered at once, as OpenSSH's sftp-server (256 KiB less
/// room for the header), so any client's packet limit holds.
const MAX_READ: u32 = 256 * 1024 - 1024;
/// Open handles per session; a client that leaks handles is refused, not us.
const MAX_HANDLES: usize = 512;
/// Directory entries per READDIR answer.
const READDIR_BATCH: usize = 128;
const POSIX_RENAME: &str = "posix-rename@openssh.com";

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
    target: Resolved,
    upload: Option<UploadGuard>,
    /// Created, truncated or written through this handle.
    dirty: bool,
}

enum OpenHandle {
    File(OpenFile),
    Dir(VecDeque<File>),
}

/// The russh-sftp server handler of one session.
pub(crate) struct SftpHandler {
    tree: Arc<UserTree>,
    notifier: Notifier,
    shutdown: Shutdown,
    uploads: Uploads,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

impl SftpHandler {
    pub(crate) fn new(
        tree: Arc<UserTree>,
        notifier: Notifier,
        shutdown: Shutdown,
        uploads: Uploads,
    ) -> Self {
        Self {
            tree,
            notifier,
            shutdown,
            uploads,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn user(&self) -> &str {
        self.tree.user()
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

    /// Resolves `path` on a blocking thread and runs `op` there.
    async fn on_path<T, F>(&self, path: String, op: F) -> Result<T, StatusReply>
    where
        T: Send + 'static,
        F: FnOnce(Resolved) -> Result<T, StatusReply> + Send + 'static,
    {
        let tree = self.tree.clone();
        let user = self.user().to_string();
        blocking(move || match tree.resolve(&path) {
            Ok(resolved) => op(resolved),
            Err(e) => Err(path_status(&user, &path, e)),
        })
        .await
    }

    async fn do_rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, StatusReply> {
        let tree = self.tree.clone();
        let user = self.user().to_string();
        let (to, size) = blocking(move || {
            let from = tree
                .resolve(&oldpath)
                .map_err(|e| path_status(&user, &oldpath, e))?;
            let to = tree
                .resolve(&newpath)
                .map_err(|e| path_status(&user, &newpath, e))?;
            if from.rel.is_empty() || to.rel.is_empty() {
                return Err(
                    StatusCode::PermissionDenied.with_message("cannot rename the root directory")
                );
            }
            std::fs::symlink_metadata(&from.real).map_err(|e| io_status(&e))?;
            // POSIX semantics (an existing target is replaced), as OpenSSH's
            // posix-rename: uploaders rename over older files of the same name.
            std::fs::rename(&from.real, &to.real).map_err(|e| io_status(&e))?;
            let meta = std::fs::metadata(&to.real).map_err(|e| io_status(&e))?;
            Ok((to, meta.is_file().then_some(meta.len())))
        })
        .await?;
        tracing::debug!(user = self.user(), path = %to.rel, "renamed");
        if let Some(size) = size {
            self.notifier.upload_completed(self.user(), &to.rel, size);
        }
        Ok(ok(id))
    }
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
        let (file, target) = self
            .on_path(filename, move |target| {
                if target.rel.is_empty() {
                    return Err(StatusCode::Failure.with_message("is a directory"));
                }
                let mut options: OpenOptions = pflags.into();
                if !pflags.intersects(OpenFlags::READ | OpenFlags::WRITE | OpenFlags::APPEND) {
                    options.read(true);
                }
                if pflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE)
                    && !pflags.contains(OpenFlags::APPEND)
                {
                    options.write(true);
                }
                let file = options.open(&target.real).map_err(|e| io_status(&e))?;
                let meta = file.metadata().map_err(|e| io_status(&e))?;
                if meta.is_dir() {
                    return Err(StatusCode::Failure.with_message("is a directory"));
                }
                Ok((file, target))
            })
            .await?;
        let upload = writes.then(|| self.uploads.start());
        let dirty = pflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
        tracing::debug!(user = self.user(), path = %target.rel, writes, "open");
        let handle = self.insert(OpenHandle::File(OpenFile {
            file: Arc::new(file),
            target,
            upload,
            dirty,
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
                    target,
                    upload,
                    dirty,
                } = open;
                if upload.is_some() && dirty {
                    let size = blocking(move || {
                        let size = file.metadata().map_err(|e| io_status(&e))?.len();
                        drop(file);
                        Ok(size)
                    })
                    .await?;
                    self.notifier
                        .upload_completed(self.user(), &target.rel, size);
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
        let file = open.file.clone();
        blocking(move || write_all_at(&file, &data, offset).map_err(|e| io_status(&e))).await?;
        if let Some(OpenHandle::File(open)) = self.handles.get_mut(&handle) {
            open.dirty = true;
        }
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let user = self.user().to_string();
        self.on_path(path, move |target| {
            let meta = std::fs::symlink_metadata(&target.real).map_err(|e| io_status(&e))?;
            Ok(Attrs {
                id,
                attrs: attrs(&meta, &user),
            })
        })
        .await
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let user = self.user().to_string();
        self.on_path(path, move |target| {
            let meta = std::fs::metadata(&target.real).map_err(|e| io_status(&e))?;
            Ok(Attrs {
                id,
                attrs: attrs(&meta, &user),
            })
        })
        .await
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

    /// Size changes are applied; owner, permissions and times are accepted and
    /// ignored (the gateway owns its files), so `put -p` works.
    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.on_path(path, move |target| {
            let meta = std::fs::metadata(&target.real).map_err(|e| io_status(&e))?;
            if let Some(size) = attrs.size
                && meta.is_file()
                && size != meta.len()
            {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&target.real)
                    .map_err(|e| io_status(&e))?;
                file.set_len(size).map_err(|e| io_status(&e))?;
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
            blocking(move || file.set_len(size).map_err(|e| io_status(&e))).await?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let user = self.user().to_string();
        let entries = self
            .on_path(path, move |target| {
                let mut entries = Vec::new();
                for entry in std::fs::read_dir(&target.real).map_err(|e| io_status(&e))? {
                    let entry = entry.map_err(|e| io_status(&e))?;
                    // The entry's own metadata: a symlink is listed as a symlink.
                    let Ok(meta) = entry.metadata() else { continue };
                    let name = entry.file_name().to_string_lossy().into_owned();
                    entries.push(File::new(name, attrs(&meta, &user)));
                }
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
        self.on_path(filename, move |target| {
            let meta = std::fs::symlink_metadata(&target.real).map_err(|e| io_status(&e))?;
            if meta.is_dir() {
                return Err(StatusCode::Failure.with_message("is a directory (use rmdir)"));
            }
            std::fs::remove_file(&target.real).map_err(|e| io_status(&e))?;
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
        self.on_path(path, move |target| {
            std::fs::create_dir(&target.real).map_err(|e| io_status(&e))?;
            Ok(ok(id))
        })
        .await
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        self.on_path(path, move |target| {
            if target.rel.is_empty() {
                return Err(
                    StatusCode::PermissionDenied.with_message("cannot remove the root directory")
                );
            }
            std::fs::remove_dir(&target.real).map_err(|e| io_status(&e))?;
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
        if request != POSIX_RENAME {
            return Err(StatusCode::OpUnsupported
                .with_message(format!("extension {request} is not supported")));
        }
        let mut rest = data.as_slice();
        let (Some(old), Some(new)) = (ssh_string(&mut rest), ssh_string(&mut rest)) else {
            return Err(StatusCode::BadMessage.with_message("posix-rename needs two paths"));
        };
        self.do_rename(id, old, new).await.map(Packet::Status)
    }
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

/// The status OpenSSH's sftp-server would send for the same errno.
fn io_status(e: &io::Error) -> StatusReply {
    use io::ErrorKind as K;
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
        PathError::Io(e) => io_status(&e),
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
