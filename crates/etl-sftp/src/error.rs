//! [`SftpError`]: every error names the server, the user and the path, and
//! says what to check.

use std::path::PathBuf;

/// What went wrong, with the server, user and path in every message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SftpError {
    #[error("invalid SFTP address {addr:?}: {reason} (expected host:port, e.g. 127.0.0.1:2222)")]
    Address { addr: String, reason: String },
    #[error("invalid SFTP client settings: {0}")]
    Settings(String),
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
        "cannot use SSH private key {path}: {reason} (check that the file exists and is readable, and give its passphrase if it has one)"
    )]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "SFTP server {server} presented host key {actual}, which is not in {known_hosts}: refusing to connect (add the server's key to that file, e.g. with ssh-keyscan, pin its fingerprint, or allow trust on first use)"
    )]
    UnknownHostKey {
        server: String,
        known_hosts: PathBuf,
        actual: String,
    },
    #[error(
        "SFTP server {server} presented host key {actual}, but {known_hosts} line {line} records another key for it: refusing to connect (someone may be intercepting the connection; if the server's key was changed on purpose, update that line)"
    )]
    HostKeyChanged {
        server: String,
        known_hosts: PathBuf,
        line: usize,
        actual: String,
    },
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

    /// The server's host key was refused (pinned fingerprint or known_hosts):
    /// retrying will not help until the configuration or the server changes.
    pub fn is_host_key(&self) -> bool {
        matches!(
            self,
            Self::HostKey { .. } | Self::UnknownHostKey { .. } | Self::HostKeyChanged { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
