//! The server's identity: an ed25519 host key generated on first start and
//! reused after, so clients that pinned it keep trusting the gateway.
//!
//! At every start its SHA-256 fingerprint is written to
//! `<data-dir>/`[`FINGERPRINT_FILE`] (and the public key beside the private
//! one), so a supervisor can hand it to the clients to pin
//! (`sftp-gateway host-key` prints it without starting the server, for a
//! supervisor that must know it before the clients start).

use std::{io::Write, path::Path};

use russh::keys::{
    HashAlg, PrivateKey,
    ssh_key::{LineEnding, private::Ed25519Keypair},
};

use crate::{Config, Error};

/// File in the data directory holding the host key's `SHA256:…` fingerprint.
pub const FINGERPRINT_FILE: &str = "ssh_host_key.sha256";

/// Loads (or generates) the host key that `config` names, publishes its
/// fingerprint in the data directory, and returns it (`SHA256:…`).
pub fn host_key_fingerprint(config: &Config) -> Result<String, Error> {
    let key = load_or_generate(&config.host_key_path())?;
    publish(&config.data_dir, &key)
}

/// Writes `<data_dir>/FINGERPRINT_FILE` (replacing it atomically) and the
/// `.pub` beside the private key if missing; returns the fingerprint.
pub(crate) fn publish(data_dir: &Path, key: &PrivateKey) -> Result<String, Error> {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let path = data_dir.join(FINGERPRINT_FILE);
    let err = |e: std::io::Error| Error::DataDir {
        path: path.clone(),
        source: e,
    };
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let tmp = data_dir.join(format!(".{FINGERPRINT_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, format!("{fingerprint}\n").as_bytes(), 0o644).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(fingerprint)
}

/// Loads the key at `path`, or generates and stores one (mode 0600, plus a
/// `.pub` beside it) when the file does not exist.
pub(crate) fn load_or_generate(path: &Path) -> Result<PrivateKey, Error> {
    let err = |reason: String| Error::HostKey {
        path: path.to_path_buf(),
        reason,
    };
    if path.exists() {
        let key = russh::keys::load_secret_key(path, None).map_err(|e| err(e.to_string()))?;
        tracing::info!(path = %path.display(), fingerprint = %key.fingerprint(HashAlg::Sha256), "host key loaded");
        return Ok(key);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    let seed: [u8; 32] = rand::random();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err(format!("cannot encode: {e}")))?;
    write_new(path, pem.as_bytes(), 0o600).map_err(|e| err(format!("cannot write: {e}")))?;
    if let Ok(public) = key.public_key().to_openssh() {
        let pub_path = path.with_extension("pub");
        let _ = write_new(&pub_path, format!("{public}\n").as_bytes(), 0o644);
    }
    tracing::info!(path = %path.display(), fingerprint = %key.fingerprint(HashAlg::Sha256), "host key generated");
    Ok(key)
}

/// Creates `path` (failing if it exists, so two starts never overwrite each
/// other's key) with `mode` from the first byte.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/host");
        let first = load_or_generate(&path).expect("generate");
        let again = load_or_generate(&path).expect("load");
        assert_eq!(
            first.fingerprint(HashAlg::Sha256),
            again.fingerprint(HashAlg::Sha256)
        );
        assert!(path.with_extension("pub").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn fingerprint_is_published_in_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::ephemeral(dir.path());
        let printed = host_key_fingerprint(&config).expect("fingerprint");
        assert!(printed.starts_with("SHA256:"), "{printed}");
        let written = std::fs::read_to_string(dir.path().join(FINGERPRINT_FILE)).expect("file");
        assert_eq!(written.trim(), printed);
        assert_eq!(
            host_key_fingerprint(&config).expect("again"),
            printed,
            "same key"
        );
    }

    #[test]
    fn garbage_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host");
        std::fs::write(&path, "garbage").expect("write");
        let err = load_or_generate(&path).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("host")));
    }
}
