//! The server's identity: an ed25519 host key generated on first start and
//! reused after, so clients that pinned it keep trusting the gateway.

use std::{io::Write, path::Path};

use russh::keys::{
    HashAlg, PrivateKey,
    ssh_key::{LineEnding, private::Ed25519Keypair},
};

use crate::Error;

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
    fn garbage_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host");
        std::fs::write(&path, "garbage").expect("write");
        let err = load_or_generate(&path).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("host")));
    }
}
