//! The secrets of one stack: made by the first `etlctl supervise` in a stack directory,
//! kept across `down`/`up` (clients that read them keep working), each in a file only
//! its owner reads (0600), never printed or logged.
//!
//! - `api-token`: the control-plane token every service requires and etlctl sends.
//! - `sftp-extractor-password`: the extractor's SFTP login, profile `upload` (it may
//!   write, rename and delete in `input/` only).
//! - `sftp-connect-password`: connect-manager's SFTP login, profile `full` (its source
//!   connector moves files to `finished/` and `error/`).
//!
//! No SFTP password is a constant any more: the gateway of a local stack accepts only
//! these two users, each with its own random password.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::layout::{SFTP_TREE, StackDir};

/// The gateway's SFTP users in a local stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SftpAccount {
    /// The extractor's uploads.
    Extractor,
    /// connect-manager's source connector, which reads and moves the uploads.
    Connect,
}

impl SftpAccount {
    pub const ALL: [SftpAccount; 2] = [SftpAccount::Extractor, SftpAccount::Connect];

    /// The user name on the gateway.
    pub fn user(self) -> &'static str {
        match self {
            SftpAccount::Extractor => "extractor",
            SftpAccount::Connect => "connect",
        }
    }

    /// The gateway's permission profile (`--permissions NAME:PROFILE`): the least each
    /// needs. `upload` writes only in the watched `input/`; `full` is what moving files
    /// to `finished/` and `error/` takes.
    pub fn profile(self) -> &'static str {
        match self {
            SftpAccount::Extractor => "upload",
            SftpAccount::Connect => "full",
        }
    }

    /// The user's root on the gateway (`--root NAME:ROOT`): the same for both, so the
    /// extractor's uploads land where the source connector lists them, and the
    /// gateway's notices of the extractor's uploads reach the connector, which watches
    /// as itself (the gateway keys notices by root, not by login).
    pub fn root(self) -> &'static str {
        SFTP_TREE
    }
}

/// What the services' environment needs besides the plan, read from the stack directory
/// when a service starts: the SFTP passwords and the gateway's host key fingerprint.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StackSecrets {
    pub extractor_password: String,
    pub connect_password: String,
    /// The gateway's host key (`SHA256:…`), which the SFTP clients pin; `None` until the
    /// gateway (or `sftp-gateway host-key`) first published it.
    pub sftp_host_key: Option<String>,
}

impl StackSecrets {
    pub fn password(&self, account: SftpAccount) -> &str {
        match account {
            SftpAccount::Extractor => &self.extractor_password,
            SftpAccount::Connect => &self.connect_password,
        }
    }
}

impl std::fmt::Debug for StackSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackSecrets")
            .field("extractor_password", &"***")
            .field("connect_password", &"***")
            .field("sftp_host_key", &self.sftp_host_key)
            .finish()
    }
}

impl StackDir {
    /// Makes every secret of the stack that does not exist yet (see the module doc).
    pub fn ensure_secrets(&self) -> std::io::Result<()> {
        ensure_secret_file(&self.api_token_file())?;
        for account in SftpAccount::ALL {
            ensure_secret_file(&self.sftp_password_file(account))?;
        }
        Ok(())
    }

    /// The stack's API token, if `up` made one.
    pub fn read_api_token(&self) -> anyhow::Result<Option<etl_service::auth::Token>> {
        let path = self.api_token_file();
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(etl_service::auth::Token::from_file(&path)?))
    }

    /// The passwords (which must exist: [`StackDir::ensure_secrets`]) and the host key
    /// fingerprint as published now.
    pub fn read_secrets(&self) -> anyhow::Result<StackSecrets> {
        let password = |account| {
            let path = self.sftp_password_file(account);
            read_secret(&path).map_err(|e| {
                anyhow::anyhow!("cannot read the SFTP password {}: {e}", path.display())
            })
        };
        Ok(StackSecrets {
            extractor_password: password(SftpAccount::Extractor)?,
            connect_password: password(SftpAccount::Connect)?,
            sftp_host_key: self.read_host_key_fingerprint(),
        })
    }
}

/// The first line of a secret file, which must not be empty.
fn read_secret(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(line.to_owned()),
        _ => Err(std::io::Error::other("the file is empty")),
    }
}

/// Makes `path` once: 32 random bytes, hex (no `,` or `:`, which the gateway's
/// `NAME:PASSWORD` lists could not hold), in a file only its owner reads (0600). An
/// existing file is kept.
fn ensure_secret_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{secret}\n").as_bytes())?;
        file.sync_all()?;
    }
    // A concurrent first start may have made one meanwhile: keep that one.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    std::fs::remove_file(&tmp)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_made_once_and_only_their_owner_reads_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::new(&tmp.path().join("stack")).expect("dir");
        assert!(dir.read_api_token().expect("read").is_none());
        assert!(
            dir.read_secrets().is_err(),
            "no passwords before ensure_secrets"
        );
        dir.ensure_secrets().expect("make");
        let token = dir.read_api_token().expect("read").expect("token");
        assert_eq!(token.expose().len(), 64);
        let secrets = dir.read_secrets().expect("read");
        assert_eq!(secrets.extractor_password.len(), 64);
        assert_ne!(secrets.extractor_password, secrets.connect_password);
        assert_ne!(secrets.extractor_password, token.expose());
        assert_eq!(secrets.sftp_host_key, None);
        assert_eq!(mode(&dir.api_token_file()), 0o600);
        for account in SftpAccount::ALL {
            assert_eq!(mode(&dir.sftp_password_file(account)), 0o600, "{account:?}");
        }

        dir.ensure_secrets().expect("again");
        assert_eq!(dir.read_api_token().expect("read"), Some(token));
        assert_eq!(dir.read_secrets().expect("read"), secrets);
        assert!(!format!("{secrets:?}").contains(&secrets.connect_password));
    }
}
