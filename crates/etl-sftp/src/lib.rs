//! The file-etl SFTP client: what the extractor uses to upload chunk files and
//! the source connector uses to list, read and move them. It speaks plain SFTP
//! v3 over SSH (russh + russh-sftp), so it works against our `sftp-gateway` and
//! against OpenSSH's `sftp-server` alike.
//!
//! # Layout
//! - [`SftpConfig`] / [`SftpAuth`]: where to connect and how to log in (password
//!   or private key file). `Debug` never prints a secret.
//! - [`SftpClient::connect`]: TCP, SSH handshake, login, then the `sftp` subsystem.
//! - File operations on [`SftpClient`] (`list`, `read`, `write`, `write_atomic`,
//!   `rename`, `remove`, `exists`, `mkdir_all`), all through `&self`, so one
//!   client (or its clones) serves several tasks at once; requests are pipelined
//!   on the one SSH channel.
//! - [`SftpError`]: every error names the server, the user and the path, and says
//!   what to check.
//!
//! Paths are relative to the login directory (`"input/a.csv"`), `/`-separated.
//!
//! # Host keys
//! [`SftpClient::connect`] accepts whatever host key the server presents. The
//! gateway generates its key on first start and runs on loopback or inside a
//! compose network, where the peer's address is assigned by the supervisor and
//! there is no `known_hosts` to distribute; login still needs the user's
//! password or key, and the key's SHA-256 fingerprint is logged so an operator
//! can compare it. Where the link crosses a network you do not trust, pin the
//! key with [`SftpClient::connect_pinned`] (the `SHA256:…` form that
//! `ssh-keygen -lf` prints).

use std::{
    fmt, io,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use russh::{
    client,
    keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate, ssh_key::public::KeyData},
};
use russh_sftp::{
    client::{SftpSession, error::Error as ProtoError},
    protocol::StatusCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long to wait for TCP connect + SSH handshake + login.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one SFTP request may wait for its answer.
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// Size of one SFTP WRITE. Several are in flight at once (russh-sftp pipelines
/// up to 16), so a 5 MiB upload is not 160 round trips.
const WRITE_PIECE: u32 = 64 * 1024;

/// How to log in.
#[derive(Clone)]
pub enum SftpAuth {
    Password(String),
    /// An OpenSSH private key file without passphrase (ed25519, ECDSA or RSA).
    KeyFile(PathBuf),
}

impl fmt::Debug for SftpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(***)"),
            Self::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
        }
    }
}

/// Where to connect and as whom.
#[derive(Clone, Debug)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SftpAuth,
}

impl SftpConfig {
    /// A config from an address in the `--sftp-addr` form (`host:port`,
    /// `[::1]:2222`, or a bare host meaning port 22).
    pub fn from_addr(addr: &str, user: &str, auth: SftpAuth) -> Result<Self, SftpError> {
        let (host, port) = split_addr(addr)?;
        Ok(Self {
            host,
            port,
            user: user.to_string(),
            auth,
        })
    }

    /// `host:port`, as shown in error messages and logs.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_addr(addr: &str) -> Result<(String, u16), SftpError> {
    let bad = |reason: &str| SftpError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let addr = addr.trim();
    let addr = addr
        .strip_prefix("sftp://")
        .or_else(|| addr.strip_prefix("ssh://"))
        .unwrap_or(addr);
    if addr.is_empty() {
        return Err(bad("empty address"));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("unexpected text after ']'")),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => (addr, None), // bare IPv6
            Some((host, port)) => (host, Some(port)),
            None => (addr, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("port is not a number 0-65535"))?,
        None => 22,
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok((host.to_string(), port))
}

/// One directory entry, as [`SftpClient::list`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
    pub modified_unix: Option<u64>,
}

/// What went wrong, with the server, user and path in every message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SftpError {
    #[error("invalid SFTP address {addr:?}: {reason} (expected host:port, e.g. 127.0.0.1:2222)")]
    Address { addr: String, reason: String },
    #[error(
        "cannot connect to SFTP server {server}: {reason} (is the server running and the address right? check ETL_SFTP_ADDR)"
    )]
    Connect { server: String, reason: String },
    #[error(
        "SFTP server {server} presented host key {actual}, but {expected} is pinned: refusing to connect (update the pinned fingerprint if the server's key was changed on purpose)"
    )]
    HostKey {
        server: String,
        expected: String,
        actual: String,
    },
    #[error(
        "cannot use SSH private key {path}: {reason} (check that the file exists, is readable and has no passphrase)"
    )]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "SFTP server {server} refused login of user {user:?} with {method}: check the user name and the {method} (ETL_SFTP_USER / ETL_SFTP_PASSWORD, or the authorized keys of that user on the server)"
    )]
    Auth {
        server: String,
        user: String,
        method: &'static str,
    },
    #[error(
        "SFTP server {server}: user {user:?} logged in but the sftp subsystem did not start: {reason} (does the server allow SFTP for this user?)"
    )]
    Subsystem {
        server: String,
        user: String,
        reason: String,
    },
    #[error(
        "SFTP server {server} (user {user:?}): cannot {op} {path:?}: no such file or directory"
    )]
    NotFound {
        server: String,
        user: String,
        op: &'static str,
        path: String,
    },
    #[error(
        "SFTP server {server} (user {user:?}): cannot {op} {path:?}: permission denied (paths are relative to the user's root and may not leave it; check the server's file permissions)"
    )]
    PermissionDenied {
        server: String,
        user: String,
        op: &'static str,
        path: String,
    },
    #[error("SFTP server {server} (user {user:?}): cannot {op} {path:?}: {reason}")]
    Remote {
        server: String,
        user: String,
        op: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "SFTP server {server} (user {user:?}): connection failed during {op} {path:?}: {reason} (reconnect and retry)"
    )]
    Connection {
        server: String,
        user: String,
        op: &'static str,
        path: String,
        reason: String,
    },
}

impl SftpError {
    /// The path does not exist on the server.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// The server could not be reached or the session broke: reconnecting may help.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Connection { .. })
    }
}

/// Accepts (or, when pinned, checks) the server's host key and remembers its
/// fingerprint for logs.
struct HostKeyCheck {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &KeyData = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key(),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let accepted = match &self.pinned {
            None => true,
            Some(pinned) => same_fingerprint(pinned, &fingerprint),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fingerprint);
        }
        Ok(accepted)
    }
}

fn same_fingerprint(pinned: &str, actual: &str) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("SHA256:").to_string();
    strip(pinned) == strip(actual)
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
    server: String,
    user: String,
    host_key: String,
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
    /// key (see the crate docs for why).
    pub async fn connect(cfg: &SftpConfig) -> Result<Self, SftpError> {
        Self::connect_inner(cfg, None).await
    }

    /// Like [`SftpClient::connect`], but refuses a server whose host key does
    /// not have this SHA-256 fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints).
    pub async fn connect_pinned(cfg: &SftpConfig, fingerprint: &str) -> Result<Self, SftpError> {
        Self::connect_inner(cfg, Some(fingerprint.to_string())).await
    }

    async fn connect_inner(cfg: &SftpConfig, pinned: Option<String>) -> Result<Self, SftpError> {
        let server = cfg.server();
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::establish(cfg, pinned)).await {
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

    async fn establish(cfg: &SftpConfig, pinned: Option<String>) -> Result<Self, SftpError> {
        let server = cfg.server();
        // Load the key before dialing: a missing key file is a local mistake and
        // should say so, not look like a server problem.
        let key = match &cfg.auth {
            SftpAuth::KeyFile(path) => Some(Arc::new(
                russh::keys::load_secret_key(path, None).map_err(|e| SftpError::KeyFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            )),
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
        let seen = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck {
            pinned: pinned.clone(),
            seen: seen.clone(),
        };
        let connected =
            client::connect(Arc::new(ssh_config), (cfg.host.as_str(), cfg.port), handler).await;
        let host_key = seen.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
        let mut ssh = match connected {
            Ok(ssh) => ssh,
            Err(russh::Error::UnknownKey) if pinned.is_some() => {
                return Err(SftpError::HostKey {
                    server,
                    expected: pinned.unwrap_or_default(),
                    actual: host_key,
                });
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
            (SftpAuth::KeyFile(_), Some(key)) => {
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
            (SftpAuth::KeyFile(path), None) => {
                return Err(SftpError::KeyFile {
                    path: path.clone(),
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
                server,
                user: cfg.user.clone(),
                host_key,
            }),
        })
    }

    /// SHA-256 fingerprint of the server's host key (`SHA256:…`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.inner.host_key
    }

    /// The entries of `dir` (`""` or `"."` is the login directory), without
    /// `.` and `..`, sorted by name.
    pub async fn list(&self, dir: &str) -> Result<Vec<RemoteEntry>, SftpError> {
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
    }

    /// Size, type and modification time of `path` (following symlinks).
    pub async fn stat(&self, path: &str) -> Result<RemoteEntry, SftpError> {
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
    }

    /// The whole content of `path`, read with pipelined requests.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, SftpError> {
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
    }

    /// Creates or truncates `path` and writes `data` to it. Readers may see
    /// the file while it grows: use [`SftpClient::write_atomic`] for uploads.
    pub async fn write(&self, path: &str, data: &[u8]) -> Result<(), SftpError> {
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
    }

    /// Writes `dir/.name.part` then renames it to `dir/name`, so no reader sees
    /// a partial file (hidden names are ignored by watchers and connectors).
    pub async fn write_atomic(&self, dir: &str, name: &str, data: &[u8]) -> Result<(), SftpError> {
        let part = join(dir, &format!(".{name}.part"));
        let target = join(dir, name);
        if let Err(e) = self.write(&part, data).await {
            // Best effort: do not leave a stale temporary behind.
            let _ = self.inner.sftp.remove_file(part.as_str()).await;
            return Err(e);
        }
        self.rename(&part, &target).await
    }

    /// Renames `from` to `to`, replacing an existing `to`. SFTP v3 servers such
    /// as OpenSSH's refuse to rename onto an existing file; then the target is
    /// removed and the rename retried (not atomic, but never partial).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), SftpError> {
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
    }

    /// Removes the file `path`.
    pub async fn remove(&self, path: &str) -> Result<(), SftpError> {
        self.inner
            .sftp
            .remove_file(path)
            .await
            .map_err(|e| self.proto_err("remove", path, e))
    }

    /// Whether `path` exists (file or directory).
    pub async fn exists(&self, path: &str) -> Result<bool, SftpError> {
        match self.inner.sftp.metadata(path).await {
            Ok(_) => Ok(true),
            Err(ProtoError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(false),
            Err(e) => Err(self.proto_err("stat", path, e)),
        }
    }

    /// Creates `dir` and its missing parents; existing directories are fine.
    pub async fn mkdir_all(&self, dir: &str) -> Result<(), SftpError> {
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
            ProtoError::UnexpectedBehavior(reason) if reason.contains("closed") => {
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
    fn debug_hides_password() {
        let cfg = SftpConfig {
            host: "h".into(),
            port: 22,
            user: "u".into(),
            auth: SftpAuth::Password("hunter2".into()),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn addresses_split() {
        let p = |a: &str| split_addr(a).map_err(|e| e.to_string());
        assert_eq!(p("127.0.0.1:2222"), Ok(("127.0.0.1".into(), 2222)));
        assert_eq!(p("sftp-gateway:2222"), Ok(("sftp-gateway".into(), 2222)));
        assert_eq!(p("[::1]:2222"), Ok(("::1".into(), 2222)));
        assert_eq!(p("example.org"), Ok(("example.org".into(), 22)));
        assert_eq!(p("sftp://h:23"), Ok(("h".into(), 23)));
        assert!(p("h:notaport").is_err());
        assert!(p("").is_err());
        assert!(p(":22").is_err());
    }

    #[test]
    fn server_brackets_ipv6() {
        let cfg = SftpConfig::from_addr("[::1]:2222", "u", SftpAuth::Password("p".into()));
        assert_eq!(cfg.map(|c| c.server()).ok(), Some("[::1]:2222".to_string()));
    }

    #[test]
    fn joins_paths() {
        assert_eq!(join("input", "a.csv"), "input/a.csv");
        assert_eq!(join("input/", "a.csv"), "input/a.csv");
        assert_eq!(join("", "a.csv"), "a.csv");
        assert_eq!(join(".", "a.csv"), "a.csv");
        assert_eq!(join("/data/in", ".a.part"), "/data/in/.a.part");
        assert_eq!(join("/", "a.csv"), "/a.csv");
    }

    #[test]
    fn fingerprints_compare_with_or_without_prefix() {
        assert!(same_fingerprint("SHA256:abc", "SHA256:abc"));
        assert!(same_fingerprint("abc", "SHA256:abc"));
        assert!(!same_fingerprint("SHA256:abd", "SHA256:abc"));
    }

    #[test]
    fn errors_name_server_user_and_path() {
        let e = SftpError::NotFound {
            server: "127.0.0.1:2222".into(),
            user: "etl".into(),
            op: "read",
            path: "input/a.csv".into(),
        };
        let msg = e.to_string();
        for part in ["127.0.0.1:2222", "etl", "input/a.csv", "read"] {
            assert!(msg.contains(part), "{msg}");
        }
        assert!(e.is_not_found());
    }
}
