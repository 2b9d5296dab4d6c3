//! Where to connect and as whom: [`SftpConfig`], [`SftpAuth`]. `Debug` never
//! prints a secret.

use std::{fmt, path::PathBuf};

use etl_core::net::HostPort;

use crate::SftpError;

/// How to log in.
#[derive(Clone)]
pub enum SftpAuth {
    Password(String),
    /// An OpenSSH private key file without passphrase (ed25519, ECDSA or RSA).
    KeyFile(PathBuf),
    /// An OpenSSH private key file, encrypted with `passphrase` when given.
    Key {
        path: PathBuf,
        passphrase: Option<String>,
    },
    /// An OpenSSH or PEM private key given as text (a connector's
    /// `tls.private.key`), encrypted with `passphrase` when given.
    KeyPem {
        pem: String,
        passphrase: Option<String>,
    },
}

impl SftpAuth {
    /// Key login from a private key file, with its passphrase if it has one.
    pub fn key(path: impl Into<PathBuf>, passphrase: Option<String>) -> Self {
        Self::Key {
            path: path.into(),
            passphrase: passphrase.filter(|p| !p.is_empty()),
        }
    }
}

impl fmt::Debug for SftpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(***)"),
            Self::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
            Self::Key { path, passphrase } => f
                .debug_struct("Key")
                .field("path", path)
                .field("passphrase", &passphrase.as_ref().map(|_| "***"))
                .finish(),
            Self::KeyPem { passphrase, .. } => f
                .debug_struct("KeyPem")
                .field("pem", &"***")
                .field("passphrase", &passphrase.as_ref().map(|_| "***"))
                .finish(),
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
        HostPort {
            host: self.host.clone(),
            port: self.port,
        }
        .to_string()
    }
}

/// `--sftp-addr` (optionally `sftp://` or `ssh://` first) as host and port,
/// with [`etl_core::net::HostPort`]: the workspace's one `host:port` parser.
pub(crate) fn split_addr(addr: &str) -> Result<(String, u16), SftpError> {
    let trimmed = addr.trim();
    let bare = trimmed
        .strip_prefix("sftp://")
        .or_else(|| trimmed.strip_prefix("ssh://"))
        .unwrap_or(trimmed);
    HostPort::parse(bare, 22)
        .map(|a| (a.host, a.port))
        .map_err(|e| SftpError::Address {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
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
        let key = SftpAuth::key("/k", Some("open sesame".into()));
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("open sesame") && shown.contains("/k"),
            "{shown}"
        );
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
}
