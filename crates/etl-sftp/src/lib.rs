//! The file-etl SFTP client: what the extractor uses to upload chunk files and
//! the source connector uses to list, read and move them. It speaks plain SFTP
//! v3 over SSH (russh + russh-sftp), so it works against our `sftp-gateway` and
//! against OpenSSH's `sftp-server` alike.
//!
//! # Layout
//! - [`SftpConfig`] / [`SftpAuth`] (`config`): where to connect and how to log
//!   in (password, or a private key file with an optional passphrase). `Debug`
//!   never prints a secret.
//! - [`HostKeyPolicy`] (`host_keys`): which server keys to trust: any, a
//!   pinned SHA-256 fingerprint, a `known_hosts` file, or trust on first use.
//! - [`SftpClient::connect_with`] (`client`): TCP, SSH handshake and host key
//!   check, login, then the `sftp` subsystem.
//! - File operations on [`SftpClient`] (`list`, `read`, `write`, `write_atomic`,
//!   `rename`, `remove`, `exists`, `mkdir_all`, `traceparent`), all through
//!   `&self`, so one client (or its clones) serves several tasks at once;
//!   requests are pipelined on the one SSH channel.
//! - [`SftpError`] (`error`): every error names the server, the user and the
//!   path, and says what to check.
//!
//! Paths are relative to the login directory (`"input/a.csv"`), `/`-separated.
//!
//! # Host keys
//! [`SftpClient::connect`] accepts whatever host key the server presents and
//! logs its fingerprint: right on loopback or inside a private compose network,
//! where nobody else can answer. Everywhere else use
//! [`SftpClient::connect_with`] and a [`HostKeyPolicy`]: sftp-gateway writes
//! its key's fingerprint to `<data-dir>/ssh_host_key.sha256` at every start
//! (`sftp-gateway host-key` prints it without starting), which
//! [`HostKeyPolicy::fingerprint_file`] pins; for other servers, a
//! `known_hosts` file as OpenSSH keeps it.
//!
//! # Trace context
//! [`SftpClient::traceparent`] asks the server for the W3C `traceparent`
//! stored with a file (sftp-gateway's `traceparent@file-etl` extension), so a
//! reader that finds a file by listing joins the file's trace; other servers
//! answer that they do not know the extension, which gives `None`.

mod client;
mod config;
mod error;
mod host_keys;

pub use client::{RemoteEntry, SftpClient, TRACEPARENT_EXTENSION};
pub use config::{SftpAuth, SftpConfig};
pub use error::SftpError;
pub use host_keys::HostKeyPolicy;
