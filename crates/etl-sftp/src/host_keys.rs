//! Which server host keys the client trusts: [`HostKeyPolicy`].
//!
//! - `AcceptAny` (what [`SftpClient::connect`](crate::SftpClient::connect)
//!   does): any key; its fingerprint is logged. For loopback and private
//!   compose networks where nobody else can answer.
//! - `Fingerprint`: exactly the key with this SHA-256 fingerprint
//!   (`SHA256:…`, as `ssh-keygen -lf` prints and as sftp-gateway writes to
//!   `<data-dir>/ssh_host_key.sha256`).
//! - `KnownHosts`: an OpenSSH `known_hosts` file (plain or hashed host
//!   names, `[host]:port` for ports other than 22); an unknown server or a
//!   changed key is refused.
//! - `TrustOnFirstUse`: the same file, but a server not yet in it is trusted
//!   and recorded there (OpenSSH's `StrictHostKeyChecking=accept-new`); a
//!   changed key is still refused. Only when asked for.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use russh::{
    client,
    keys::{HashAlg, PublicKey, PublicKeyOrCertificate, known_hosts},
};

use crate::SftpError;

/// Which server host keys to trust.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Any key (the fingerprint is logged).
    #[default]
    AcceptAny,
    /// Only the key with this SHA-256 fingerprint (`SHA256:…`; the prefix may
    /// be left out).
    Fingerprint(String),
    /// Only keys recorded for the server in this OpenSSH `known_hosts` file.
    KnownHosts(PathBuf),
    /// As `KnownHosts`, but a server missing from the file is trusted and
    /// added to it; a changed key is still refused.
    TrustOnFirstUse(PathBuf),
}

impl HostKeyPolicy {
    /// The policy from the usual settings: a pinned fingerprint wins; else a
    /// known_hosts file, learning new servers only with
    /// `trust_on_first_use`; else any key. `trust_on_first_use` without a
    /// file is an error (there is nowhere to remember the key).
    pub fn from_settings(
        fingerprint: Option<&str>,
        known_hosts: Option<&Path>,
        trust_on_first_use: bool,
    ) -> Result<Self, SftpError> {
        let fingerprint = fingerprint.map(str::trim).filter(|f| !f.is_empty());
        let known_hosts = known_hosts.filter(|p| !p.as_os_str().is_empty());
        match (fingerprint, known_hosts) {
            (Some(f), _) => Ok(Self::Fingerprint(f.to_string())),
            (None, Some(path)) if trust_on_first_use => {
                Ok(Self::TrustOnFirstUse(path.to_path_buf()))
            }
            (None, Some(path)) => Ok(Self::KnownHosts(path.to_path_buf())),
            (None, None) if trust_on_first_use => Err(SftpError::Settings(
                "trust on first use needs a known_hosts file to record the key in".into(),
            )),
            (None, None) => Ok(Self::AcceptAny),
        }
    }

    /// Pins the fingerprint written in `path` (the first non-empty line, e.g.
    /// sftp-gateway's `<data-dir>/ssh_host_key.sha256`).
    pub fn fingerprint_file(path: &Path) -> Result<Self, SftpError> {
        let text = std::fs::read_to_string(path).map_err(|e| SftpError::KeyFile {
            path: path.to_path_buf(),
            reason: format!("cannot read the host key fingerprint: {e}"),
        })?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| SftpError::KeyFile {
                path: path.to_path_buf(),
                reason: "no fingerprint in the file".into(),
            })?;
        Ok(Self::Fingerprint(line.to_string()))
    }
}

/// Why a host key was refused, for the error after the handshake.
#[derive(Clone, Debug)]
pub(crate) enum Refused {
    Pinned {
        expected: String,
    },
    Unknown {
        known_hosts: PathBuf,
    },
    Changed {
        known_hosts: PathBuf,
        line: usize,
    },
    Unreadable {
        known_hosts: PathBuf,
        reason: String,
    },
}

/// What the check saw, read back once the handshake is over.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) fingerprint: Option<String>,
    pub(crate) refused: Option<Refused>,
}

/// The russh client handler: applies the policy to the server's key.
pub(crate) struct HostKeyCheck {
    pub(crate) policy: HostKeyPolicy,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) seen: Arc<Mutex<Seen>>,
    /// Lives as long as the connection: russh drops the handler when the
    /// connection's task ends, however it ends, and the receivers in
    /// [`crate::SftpClient`] see that at once.
    pub(crate) _alive: tokio::sync::watch::Sender<()>,
}

impl HostKeyCheck {
    fn decide(&self, key: &PublicKey, fingerprint: &str) -> Result<(), Refused> {
        match &self.policy {
            HostKeyPolicy::AcceptAny => Ok(()),
            HostKeyPolicy::Fingerprint(pinned) => {
                if same_fingerprint(pinned, fingerprint) {
                    Ok(())
                } else {
                    Err(Refused::Pinned {
                        expected: pinned.clone(),
                    })
                }
            }
            HostKeyPolicy::KnownHosts(path) | HostKeyPolicy::TrustOnFirstUse(path) => {
                let learn = matches!(self.policy, HostKeyPolicy::TrustOnFirstUse(_));
                match known_hosts::check_known_hosts_path(&self.host, self.port, key, path) {
                    Ok(true) => Ok(()),
                    Ok(false) if learn => {
                        known_hosts::learn_known_hosts_path(&self.host, self.port, key, path)
                            .map_err(|e| Refused::Unreadable {
                                known_hosts: path.clone(),
                                reason: format!("cannot record the new host key: {e}"),
                            })?;
                        tracing::warn!(
                            host = %self.host,
                            port = self.port,
                            host_key = fingerprint,
                            known_hosts = %path.display(),
                            "trusting an SFTP server on first use; its key is now recorded"
                        );
                        Ok(())
                    }
                    Ok(false) => Err(Refused::Unknown {
                        known_hosts: path.clone(),
                    }),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(Refused::Changed {
                        known_hosts: path.clone(),
                        line,
                    }),
                    Err(e) => Err(Refused::Unreadable {
                        known_hosts: path.clone(),
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: PublicKey = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let decision = self.decide(&key, &fingerprint);
        let accepted = decision.is_ok();
        if let Ok(mut seen) = self.seen.lock() {
            seen.fingerprint = Some(fingerprint);
            seen.refused = decision.err();
        }
        Ok(accepted)
    }
}

/// The error for a refused key.
pub(crate) fn refusal_error(server: String, actual: String, refused: Refused) -> SftpError {
    match refused {
        Refused::Pinned { expected } => SftpError::HostKey {
            server,
            expected,
            actual,
        },
        Refused::Unknown { known_hosts } => SftpError::UnknownHostKey {
            server,
            known_hosts,
            actual,
        },
        Refused::Changed { known_hosts, line } => SftpError::HostKeyChanged {
            server,
            known_hosts,
            line,
            actual,
        },
        Refused::Unreadable {
            known_hosts,
            reason,
        } => SftpError::KeyFile {
            path: known_hosts,
            reason,
        },
    }
}

pub(crate) fn same_fingerprint(pinned: &str, actual: &str) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("SHA256:").to_string();
    strip(pinned) == strip(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_with_or_without_prefix() {
        assert!(same_fingerprint("SHA256:abc", "SHA256:abc"));
        assert!(same_fingerprint("abc", "SHA256:abc"));
        assert!(!same_fingerprint("SHA256:abd", "SHA256:abc"));
    }

    #[test]
    fn policy_from_settings() {
        let kh = Path::new("/k/known_hosts");
        let p = |f, k, t| HostKeyPolicy::from_settings(f, k, t).map_err(|e| e.to_string());
        assert_eq!(p(None, None, false), Ok(HostKeyPolicy::AcceptAny));
        assert_eq!(
            p(Some("SHA256:x"), Some(kh), true),
            Ok(HostKeyPolicy::Fingerprint("SHA256:x".into()))
        );
        assert_eq!(
            p(None, Some(kh), false),
            Ok(HostKeyPolicy::KnownHosts(kh.into()))
        );
        assert_eq!(
            p(Some(" "), Some(kh), true),
            Ok(HostKeyPolicy::TrustOnFirstUse(kh.into()))
        );
        assert!(p(None, None, true).is_err());
    }

    #[test]
    fn fingerprint_file_read() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fp");
        std::fs::write(&path, "\nSHA256:abc\n")?;
        assert_eq!(
            HostKeyPolicy::fingerprint_file(&path)?,
            HostKeyPolicy::Fingerprint("SHA256:abc".into())
        );
        assert!(HostKeyPolicy::fingerprint_file(&dir.path().join("missing")).is_err());
        Ok(())
    }
}
