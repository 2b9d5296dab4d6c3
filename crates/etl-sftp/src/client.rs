//! [`SftpClient`]: the connection (TCP, SSH handshake with the host key
//! check, login, the `sftp` subsystem) and the file operations on it.

use std::{
    fmt, io,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use russh::{client, keys::PrivateKeyWithHashAlg};
use russh_sftp::{
    client::{RawSftpSession, SftpSession, error::Error as ProtoError},
    protocol::{Packet, StatusCode},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    HostKeyPolicy, SftpAuth, SftpConfig, SftpError,
    host_keys::{HostKeyCheck, Seen, refusal_error},
};

/// How long to wait for TCP connect + SSH handshake + login.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one SFTP request may wait for its answer.
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// The SFTP extension of file-etl's gateway that returns the W3C
/// `traceparent` stored with a file (see [`SftpClient::traceparent`]).
pub const TRACEPARENT_EXTENSION: &str = "traceparent@file-etl";
/// Size of one SFTP WRITE. Several are in flight at once (russh-sftp pipelines
/// up to 16), so a 5 MiB upload is not 160 round trips.
const WRITE_PIECE: u32 = 64 * 1024;

/// One directory entry, as [`SftpClient::list`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
    pub modified_unix: Option<u64>,
}

/// A connected SFTP session. Cheap to clone; clones share the connection and
/// may be used from several tasks at once.
#[derive(Clone)]
pub struct SftpClient {
    inner: Arc<Inner>,
}

struct Inner {
    sftp: SftpSession,
    ssh: client::Handle<HostKeyCheck>,
    /// Its sender lives in the connection's handler: `changed()` fails once
    /// the connection ended (see [`SftpClient::live`]).
    gone: tokio::sync::watch::Receiver<()>,
    server: String,
    user: String,
    host_key: String,
    /// A second SFTP channel for extended requests, opened on first use:
    /// russh-sftp's [`SftpSession`] does not let them through.
    raw: tokio::sync::OnceCell<RawChannel>,
}

struct RawChannel {
    session: RawSftpSession,
    /// The server answered [`TRACEPARENT_EXTENSION`] with OP_UNSUPPORTED.
    no_traceparent: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for SftpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpClient")
            .field("server", &self.inner.server)
            .field("user", &self.inner.user)
            .field("host_key", &self.inner.host_key)
            .finish()
    }
}

impl SftpClient {
    /// Connects, logs in and starts the `sftp` subsystem, accepting any host
    /// key ([`HostKeyPolicy::AcceptAny`]; see the crate docs for when that is
    /// fine and [`SftpClient::connect_with`] for the alternatives).
    pub async fn connect(cfg: &SftpConfig) -> Result<Self, SftpError> {
        Self::connect_with(cfg, &HostKeyPolicy::AcceptAny).await
    }

    /// Like [`SftpClient::connect`], but refuses a server whose host key does
    /// not have this SHA-256 fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints).
    pub async fn connect_pinned(cfg: &SftpConfig, fingerprint: &str) -> Result<Self, SftpError> {
        Self::connect_with(cfg, &HostKeyPolicy::Fingerprint(fingerprint.to_string())).await
    }

    /// Connects, trusting the server's host key only as `policy` says: a
    /// pinned fingerprint, a known_hosts file, trust on first use, or any.
    /// A refused key is [`SftpError::HostKey`], [`SftpError::UnknownHostKey`]
    /// or [`SftpError::HostKeyChanged`] ([`SftpError::is_host_key`]).
    pub async fn connect_with(cfg: &SftpConfig, policy: &HostKeyPolicy) -> Result<Self, SftpError> {
        let server = cfg.server();
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::establish(cfg, policy.clone())).await {
            Ok(result) => result,
            Err(_) => Err(SftpError::Connect {
                server,
                reason: format!(
                    "no SSH handshake and login within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    async fn establish(cfg: &SftpConfig, policy: HostKeyPolicy) -> Result<Self, SftpError> {
        let server = cfg.server();
        // Load the key before dialing: a missing key file is a local mistake and
        // should say so, not look like a server problem.
        let explain = |e: russh::keys::Error, passphrase: Option<&str>| match e {
            russh::keys::Error::KeyIsEncrypted => {
                "the key is encrypted and no passphrase was given".to_string()
            }
            other if passphrase.is_some() => format!("{other} (is the passphrase right?)"),
            other => other.to_string(),
        };
        let load = |path: &PathBuf, passphrase: Option<&str>| {
            russh::keys::load_secret_key(path, passphrase)
                .map(Arc::new)
                .map_err(|e| SftpError::KeyFile {
                    path: path.clone(),
                    reason: explain(e, passphrase),
                })
        };
        let key = match &cfg.auth {
            SftpAuth::KeyFile(path) => Some(load(path, None)?),
            SftpAuth::Key { path, passphrase } => Some(load(path, passphrase.as_deref())?),
            SftpAuth::KeyPem { pem, passphrase } => Some(
                russh::keys::decode_secret_key(pem, passphrase.as_deref())
                    .map(Arc::new)
                    .map_err(|e| SftpError::KeyFile {
                        path: PathBuf::from("(the private key given as text)"),
                        reason: explain(e, passphrase.as_deref()),
                    })?,
            ),
            SftpAuth::Password(_) => None,
        };

        let ssh_config = client::Config {
            inactivity_timeout: None,
            // An idle connection held by a source connector should notice a
            // server that went away instead of failing on the next read.
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (alive, gone) = tokio::sync::watch::channel(());
        let handler = HostKeyCheck {
            policy,
            host: cfg.host.clone(),
            port: cfg.port,
            seen: seen.clone(),
            _alive: alive,
        };
        let connected =
            client::connect(Arc::new(ssh_config), (cfg.host.as_str(), cfg.port), handler).await;
        let (host_key, refused) = seen
            .lock()
            .map(|s| (s.fingerprint.clone().unwrap_or_default(), s.refused.clone()))
            .unwrap_or_default();
        let mut ssh = match connected {
            Ok(ssh) => ssh,
            Err(russh::Error::UnknownKey) if refused.is_some() => {
                let refused =
                    refused.ok_or_else(|| SftpError::Settings("host key check".into()))?;
                return Err(refusal_error(server, host_key, refused));
            }
            Err(e) => {
                return Err(SftpError::Connect {
                    server,
                    reason: e.to_string(),
                });
            }
        };

        let (method, result) = match (&cfg.auth, key) {
            (SftpAuth::Password(password), _) => (
                "password",
                ssh.authenticate_password(cfg.user.as_str(), password.as_str())
                    .await,
            ),
            (SftpAuth::KeyFile(_) | SftpAuth::Key { .. } | SftpAuth::KeyPem { .. }, Some(key)) => {
                // RSA keys sign with a hash the server must accept; other key
                // types have exactly one signature algorithm.
                let hash = if key.algorithm().is_rsa() {
                    ssh.best_supported_rsa_hash().await.ok().flatten().flatten()
                } else {
                    None
                };
                (
                    "private key",
                    ssh.authenticate_publickey(
                        cfg.user.as_str(),
                        PrivateKeyWithHashAlg::new(key, hash),
                    )
                    .await,
                )
            }
            (SftpAuth::KeyFile(_) | SftpAuth::Key { .. } | SftpAuth::KeyPem { .. }, None) => {
                return Err(SftpError::KeyFile {
                    path: PathBuf::from("(the private key)"),
                    reason: "key not loaded".into(),
                });
            }
        };
        match result {
            Ok(r) if r.success() => {}
            Ok(_) => {
                return Err(SftpError::Auth {
                    server,
                    user: cfg.user.clone(),
                    method,
                });
            }
            Err(e) => {
                return Err(SftpError::Connect {
                    server,
                    reason: format!("during login: {e}"),
                });
            }
        }

        let subsystem = |reason: String| SftpError::Subsystem {
            server: server.clone(),
            user: cfg.user.clone(),
            reason,
        };
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| subsystem(e.to_string()))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| subsystem(e.to_string()))?;
        let sftp_config = russh_sftp::client::Config {
            max_write_packet_len: WRITE_PIECE + 1024,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), sftp_config)
            .await
            .map_err(|e| subsystem(e.to_string()))?;
        tracing::debug!(server = %server, user = %cfg.user, host_key = %host_key, "SFTP session open");
        Ok(Self {
            inner: Arc::new(Inner {
                sftp,
                ssh,
                gone,
                server,
                user: cfg.user.clone(),
                host_key,
                raw: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The W3C `traceparent` the server keeps with `path`: the trace the file
    /// belongs to, so a reader that found the file by listing (not by an
    /// event) joins that trace. `None` when the file has none, or when the
    /// server does not know the `traceparent@file-etl` extension (OpenSSH and
    /// other third-party servers answer OP_UNSUPPORTED; the answer is
    /// remembered, so asking again costs nothing). A missing file is
    /// [`SftpError::NotFound`].
    pub async fn traceparent(&self, path: &str) -> Result<Option<String>, SftpError> {
        self.live("read the trace context of", path, async {
            use std::sync::atomic::Ordering;
            const OP: &str = "read the trace context of";
            let raw = self.raw_channel(OP, path).await?;
            if raw.no_traceparent.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let mut data = Vec::with_capacity(4 + path.len());
            data.extend_from_slice(&(path.len() as u32).to_be_bytes());
            data.extend_from_slice(path.as_bytes());
            let status = match raw.session.extended(TRACEPARENT_EXTENSION, data).await {
                Ok(Packet::ExtendedReply(reply)) => {
                    let value = String::from_utf8_lossy(&reply.data).trim().to_string();
                    return Ok((!value.is_empty()).then_some(value));
                }
                Ok(Packet::Status(status)) | Err(ProtoError::Status(status)) => status,
                Ok(_) => return Err(self.proto_err(OP, path, ProtoError::UnexpectedPacket)),
                Err(e) => return Err(self.proto_err(OP, path, e)),
            };
            if status.status_code == StatusCode::OpUnsupported {
                raw.no_traceparent.store(true, Ordering::Relaxed);
                tracing::debug!(server = %self.inner.server, "server does not keep trace contexts with files");
                return Ok(None);
            }
            Err(self.proto_err(OP, path, ProtoError::Status(status)))
        })
        .await
    }

    async fn raw_channel(&self, op: &'static str, path: &str) -> Result<&RawChannel, SftpError> {
        self.inner
            .raw
            .get_or_try_init(|| async {
                let failed = |reason: String| SftpError::Connection {
                    server: self.inner.server.clone(),
                    user: self.inner.user.clone(),
                    op,
                    path: path.to_string(),
                    reason: format!("cannot open a second SFTP channel: {reason}"),
                };
                let channel = self
                    .inner
                    .ssh
                    .channel_open_session()
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let session = RawSftpSession::new_with_config(
                    channel.into_stream(),
                    russh_sftp::client::Config {
                        request_timeout_secs: REQUEST_TIMEOUT_SECS,
                        ..Default::default()
                    },
                );
                session.init().await.map_err(|e| failed(e.to_string()))?;
                Ok(RawChannel {
                    session,
                    no_traceparent: std::sync::atomic::AtomicBool::new(false),
                })
            })
            .await
    }

    /// SHA-256 fingerprint of the server's host key (`SHA256:…`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.inner.host_key
    }

    /// The entries of `dir` (`""` or `"."` is the login directory), without
    /// `.` and `..`, sorted by name.
    pub async fn list(&self, dir: &str) -> Result<Vec<RemoteEntry>, SftpError> {
        self.live("list", dir, async {
            let target = if dir.is_empty() { "." } else { dir };
            let entries = self
                .inner
                .sftp
                .read_dir(target)
                .await
                .map_err(|e| self.proto_err("list", dir, e))?;
            let mut out: Vec<RemoteEntry> = entries
                .map(|entry| {
                    let meta = entry.metadata();
                    RemoteEntry {
                        name: entry.file_name(),
                        size: meta.size.unwrap_or(0),
                        is_dir: meta.is_dir(),
                        modified_unix: meta.mtime.map(u64::from),
                    }
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// Size, type and modification time of `path` (following symlinks).
    pub async fn stat(&self, path: &str) -> Result<RemoteEntry, SftpError> {
        self.live("stat", path, async {
            let meta = self
                .inner
                .sftp
                .metadata(path)
                .await
                .map_err(|e| self.proto_err("stat", path, e))?;
            Ok(RemoteEntry {
                name: path.rsplit('/').next().unwrap_or(path).to_string(),
                size: meta.size.unwrap_or(0),
                is_dir: meta.is_dir(),
                modified_unix: meta.mtime.map(u64::from),
            })
        })
        .await
    }

    /// The whole content of `path`, read with pipelined requests.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, SftpError> {
        self.live("read", path, async {
            let mut file = self
                .inner
                .sftp
                .open(path)
                .await
                .map_err(|e| self.proto_err("read", path, e))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)
                .await
                .map_err(|e| self.io_err("read", path, e))?;
            file.close()
                .await
                .map_err(|e| self.io_err("read", path, e))?;
            Ok(data)
        })
        .await
    }

    /// Creates or truncates `path` and writes `data` to it. Readers may see
    /// the file while it grows: use [`SftpClient::write_atomic`] for uploads.
    pub async fn write(&self, path: &str, data: &[u8]) -> Result<(), SftpError> {
        self.live("write", path, async {
            let mut file = self
                .inner
                .sftp
                .create(path)
                .await
                .map_err(|e| self.proto_err("write", path, e))?;
            file.write_all(data)
                .await
                .map_err(|e| self.io_err("write", path, e))?;
            // Waits for every outstanding WRITE to be acknowledged, then CLOSE.
            file.close()
                .await
                .map_err(|e| self.io_err("write", path, e))?;
            Ok(())
        })
        .await
    }

    /// Writes `dir/.name.part` then renames it to `dir/name`, so no reader sees
    /// a partial file (hidden names are ignored by watchers and connectors).
    pub async fn write_atomic(&self, dir: &str, name: &str, data: &[u8]) -> Result<(), SftpError> {
        let part = join(dir, &format!(".{name}.part"));
        let target = join(dir, name);
        if let Err(e) = self.write(&part, data).await {
            // Best effort: do not leave a stale temporary behind. Through
            // `remove`, like every request, so a write that failed because the
            // connection ended does not then wait out the request timeout here.
            if !e.is_connection() {
                let _ = self.remove(&part).await;
            }
            return Err(e);
        }
        self.rename(&part, &target).await
    }

    /// Renames `from` to `to`, replacing an existing `to`. SFTP v3 servers such
    /// as OpenSSH's refuse to rename onto an existing file; then the target is
    /// removed and the rename retried (not atomic, but never partial).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), SftpError> {
        self.live("rename", from, async {
            let first = match self.inner.sftp.rename(from, to).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if self.exists(from).await? && self.exists(to).await? {
                self.remove(to).await?;
                return self
                    .inner
                    .sftp
                    .rename(from, to)
                    .await
                    .map_err(|e| self.proto_err("rename", from, e));
            }
            Err(self.proto_err("rename", from, first))
        })
        .await
    }

    /// Removes the file `path`.
    pub async fn remove(&self, path: &str) -> Result<(), SftpError> {
        self.live("remove", path, async {
            self.inner
                .sftp
                .remove_file(path)
                .await
                .map_err(|e| self.proto_err("remove", path, e))
        })
        .await
    }

    /// Whether `path` exists (file or directory).
    pub async fn exists(&self, path: &str) -> Result<bool, SftpError> {
        self.live("stat", path, async {
            match self.inner.sftp.metadata(path).await {
                Ok(_) => Ok(true),
                Err(ProtoError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(false),
                Err(e) => Err(self.proto_err("stat", path, e)),
            }
        })
        .await
    }

    /// Creates `dir` and its missing parents; existing directories are fine.
    pub async fn mkdir_all(&self, dir: &str) -> Result<(), SftpError> {
        self.live("create directory", dir, async {
            let mut prefix = if dir.starts_with('/') {
                "/".to_string()
            } else {
                String::new()
            };
            for part in dir.split('/').filter(|p| !p.is_empty() && *p != ".") {
                if !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if self.is_dir(&prefix).await? {
                    continue;
                }
                if let Err(e) = self.inner.sftp.create_dir(prefix.as_str()).await {
                    // Another task or process may have created it meanwhile.
                    if !self.is_dir(&prefix).await? {
                        return Err(self.proto_err("create directory", &prefix, e));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn is_dir(&self, path: &str) -> Result<bool, SftpError> {
        match self.inner.sftp.metadata(path).await {
            Ok(meta) if meta.is_dir() => Ok(true),
            Ok(_) => Err(SftpError::Remote {
                server: self.inner.server.clone(),
                user: self.inner.user.clone(),
                op: "create directory",
                path: path.to_string(),
                reason: "a file with that name exists".into(),
            }),
            Err(ProtoError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(false),
            Err(e) => Err(self.proto_err("stat", path, e)),
        }
    }

    /// Ends the SFTP session and the SSH connection (for every clone).
    pub async fn close(self) -> Result<(), SftpError> {
        if let Some(raw) = self.inner.raw.get() {
            let _ = raw.session.close_session();
        }
        let _ = self.inner.sftp.close().await;
        self.inner
            .ssh
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await
            .map_err(|e| SftpError::Connection {
                server: self.inner.server.clone(),
                user: self.inner.user.clone(),
                op: "close",
                path: String::new(),
                reason: e.to_string(),
            })
    }

    /// Runs one operation, failing it as a lost connection as soon as the SSH
    /// connection ends. russh-sftp fails the requests waiting when its
    /// transport ends, but one sent in the instant between the end of its
    /// reading task and the end of its writing task is written nowhere and
    /// waits out the whole request timeout: a minute in which a source holds
    /// its file and a server restart looks like a hang.
    async fn live<T>(
        &self,
        op: &'static str,
        path: &str,
        work: impl std::future::Future<Output = Result<T, SftpError>>,
    ) -> Result<T, SftpError> {
        until_gone(self.inner.gone.clone(), work, || SftpError::Connection {
            server: self.inner.server.clone(),
            user: self.inner.user.clone(),
            op,
            path: path.to_string(),
            reason: "the SSH connection ended".into(),
        })
        .await
    }

    fn proto_err(&self, op: &'static str, path: &str, e: ProtoError) -> SftpError {
        let server = self.inner.server.clone();
        let user = self.inner.user.clone();
        let path = path.to_string();
        match e {
            ProtoError::Status(s) => match s.status_code {
                StatusCode::NoSuchFile => SftpError::NotFound {
                    server,
                    user,
                    op,
                    path,
                },
                StatusCode::PermissionDenied => SftpError::PermissionDenied {
                    server,
                    user,
                    op,
                    path,
                },
                StatusCode::NoConnection | StatusCode::ConnectionLost => SftpError::Connection {
                    server,
                    user,
                    op,
                    path,
                    reason: status_text(s.status_code, &s.error_message),
                },
                code => SftpError::Remote {
                    server,
                    user,
                    op,
                    path,
                    reason: status_text(code, &s.error_message),
                },
            },
            ProtoError::Timeout => SftpError::Connection {
                server,
                user,
                op,
                path,
                reason: format!("no answer within {REQUEST_TIMEOUT_SECS} s"),
            },
            ProtoError::IO(reason) => SftpError::Connection {
                server,
                user,
                op,
                path,
                reason,
            },
            // "session closed": the transport ended before the request was
            // sent; "sender dropped": while it waited for its answer.
            ProtoError::UnexpectedBehavior(reason)
                if reason.contains("closed") || reason.contains("sender dropped") =>
            {
                SftpError::Connection {
                    server,
                    user,
                    op,
                    path,
                    reason,
                }
            }
            other => SftpError::Remote {
                server,
                user,
                op,
                path,
                reason: other.to_string(),
            },
        }
    }

    fn io_err(&self, op: &'static str, path: &str, e: io::Error) -> SftpError {
        // russh-sftp's file handles wrap protocol errors in io::Error.
        if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<ProtoError>()) {
            return self.proto_err(op, path, inner.clone());
        }
        let reason = e.to_string();
        if e.kind() == io::ErrorKind::TimedOut {
            return self.proto_err(op, path, ProtoError::Timeout);
        }
        SftpError::Remote {
            server: self.inner.server.clone(),
            user: self.inner.user.clone(),
            op,
            path: path.to_string(),
            reason,
        }
    }
}

/// `work`'s result, or `ended()` as soon as `gone`'s sender is dropped (the
/// connection ended) while `work` still waits. A failure once the connection
/// ended is `ended()` too: russh-sftp fails its waiting requests with "sender
/// dropped", which names nothing a caller can act on, while "connection lost"
/// tells it to reconnect and try again.
async fn until_gone<T, E>(
    mut gone: tokio::sync::watch::Receiver<()>,
    work: impl std::future::Future<Output = Result<T, E>>,
    ended: impl FnOnce() -> E,
) -> Result<T, E> {
    let done = tokio::select! {
        // An answer that arrived is taken even if the connection ended since.
        biased;
        done = work => done,
        // Nothing is ever sent: `changed` returns only when the sender drops.
        _ = async { while gone.changed().await.is_ok() {} } => return Err(ended()),
    };
    match done {
        Err(_) if gone.has_changed().is_err() => Err(ended()),
        done => done,
    }
}

fn status_text(code: StatusCode, message: &str) -> String {
    let code = code.to_string();
    if message.is_empty() || message.eq_ignore_ascii_case(&code) {
        code.to_lowercase()
    } else {
        format!("{} ({})", message, code.to_lowercase())
    }
}

/// `dir/name`, where an empty `dir` or `"."` means the login directory.
fn join(dir: &str, name: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() && dir.starts_with('/') {
        format!("/{name}")
    } else if trimmed.is_empty() || trimmed == "." {
        name.to_string()
    } else {
        format!("{trimmed}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths() {
        assert_eq!(join("input", "a.csv"), "input/a.csv");
        assert_eq!(join("input/", "a.csv"), "input/a.csv");
        assert_eq!(join("", "a.csv"), "a.csv");
        assert_eq!(join(".", "a.csv"), "a.csv");
        assert_eq!(join("/data/in", ".a.part"), "/data/in/.a.part");
        assert_eq!(join("/", "a.csv"), "/a.csv");
    }

    #[tokio::test]
    async fn a_request_left_unanswered_fails_when_the_connection_ends() {
        let (alive, gone) = tokio::sync::watch::channel(());
        let waiting = tokio::spawn(until_gone(
            gone,
            std::future::pending::<Result<(), &str>>(),
            || "ended",
        ));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no answer yet, connection up");
        drop(alive);
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("fails at once, not after the request timeout")
            .expect("task");
        assert_eq!(result, Err("ended"));
    }

    #[tokio::test]
    async fn an_answer_that_came_wins_over_the_end_of_the_connection() {
        let (alive, gone) = tokio::sync::watch::channel(());
        drop(alive);
        let result = until_gone(gone, async { Ok::<_, &str>(7) }, || "ended").await;
        assert_eq!(result, Ok(7));
    }

    #[tokio::test]
    async fn a_failure_after_the_connection_ended_is_the_lost_connection() {
        let (alive, gone) = tokio::sync::watch::channel(());
        let failed = until_gone(gone.clone(), async { Err::<(), _>("remote") }, || "ended");
        assert_eq!(
            failed.await,
            Err("remote"),
            "connection up: the failure itself"
        );
        drop(alive);
        let failed = until_gone(gone, async { Err::<(), _>("sender dropped") }, || "ended");
        assert_eq!(failed.await, Err("ended"));
    }
}
