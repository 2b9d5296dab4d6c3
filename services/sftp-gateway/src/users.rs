//! Who may log in and what they may do: password users (from the flags, the
//! environment, or a users file of argon2 hashes) and public-key users, built
//! once at start. Only this module sees passwords; it never logs them.

use std::{collections::BTreeMap, path::Path};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use russh::keys::{PublicKey, ssh_key::AuthorizedKeys};

use crate::{
    Config, Error,
    config::{Profile, check_user_name},
};

enum Password {
    /// Given in the environment or on the command line (kept as given).
    Plain(String),
    /// An argon2 PHC string from the users file.
    Hash(String),
}

struct User {
    password: Option<Password>,
    keys: Vec<PublicKey>,
    profile: Profile,
}

impl Default for User {
    fn default() -> Self {
        Self {
            password: None,
            keys: Vec::new(),
            profile: Profile::Full,
        }
    }
}

/// The user table.
#[derive(Default)]
pub(crate) struct Users {
    by_name: BTreeMap<String, User>,
}

impl Users {
    /// The default user, every `--user`, and every `--authorized-key` (whose
    /// file is read now, so a bad file stops the start with a clear message).
    pub(crate) fn from_config(config: &Config) -> Result<Self, Error> {
        let mut users = Users::default();
        let default = users.by_name.entry(config.sftp_user.clone()).or_default();
        if !config.sftp_password.is_empty() {
            default.password = Some(Password::Plain(config.sftp_password.clone()));
        }
        for spec in &config.users {
            check_user_name(&spec.name).map_err(Error::Config)?;
            users.by_name.entry(spec.name.clone()).or_default().password =
                Some(Password::Plain(spec.password.clone()));
        }
        if let Some(path) = &config.users_file {
            users.read_users_file(path)?;
        }
        for spec in &config.authorized_keys {
            check_user_name(&spec.name).map_err(Error::Config)?;
            let bad = |reason: String| Error::AuthorizedKeys {
                user: spec.name.clone(),
                path: spec.path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&spec.path).map_err(|e| bad(e.to_string()))?;
            let mut keys = Vec::new();
            for (n, entry) in AuthorizedKeys::new(&text).enumerate() {
                let entry = entry.map_err(|e| bad(format!("key {}: {e}", n + 1)))?;
                keys.push(entry.public_key().clone());
            }
            if keys.is_empty() {
                return Err(bad("no key in the file".into()));
            }
            users
                .by_name
                .entry(spec.name.clone())
                .or_default()
                .keys
                .extend(keys);
        }
        for spec in &config.permissions {
            if let Some(user) = users.by_name.get_mut(&spec.name) {
                user.profile = spec.profile;
            } else {
                return Err(Error::Config(format!(
                    "--permissions names user {:?}, who does not exist (add it with --user, --users-file or --authorized-key)",
                    spec.name
                )));
            }
        }
        Ok(users)
    }

    /// Reads `NAME:HASH[:PROFILE]` lines. Errors name the line, never the hash.
    fn read_users_file(&mut self, path: &Path) -> Result<(), Error> {
        let bad = |line: usize, reason: String| {
            Error::Config(format!(
                "users file {}, line {line}: {reason} (expected NAME:ARGON2-HASH[:full|upload|read]; `sftp-gateway hash-password` prints a hash)",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("users file {}: {e}", path.display())))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let name = parts.next().unwrap_or_default().trim();
            let hash = parts.next().unwrap_or_default().trim();
            check_user_name(name).map_err(|e| bad(n + 1, e))?;
            PasswordHash::new(hash)
                .ok()
                .filter(|h| h.algorithm.as_str().starts_with("argon2"))
                .ok_or_else(|| bad(n + 1, "not an argon2 PHC hash ($argon2id$...)".into()))?;
            let user = self.by_name.entry(name.to_string()).or_default();
            user.password = Some(Password::Hash(hash.to_string()));
            if let Some(profile) = parts.next() {
                user.profile = profile.parse().map_err(|e| bad(n + 1, e))?;
            }
        }
        Ok(())
    }

    /// What `user` may do.
    pub(crate) fn profile(&self, user: &str) -> Profile {
        self.by_name.get(user).map_or(Profile::Read, |u| u.profile)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether `password` is `user`'s. Blocking: an argon2 hash costs tens
    /// of milliseconds, so call it from a blocking task.
    pub(crate) fn check_password(&self, user: &str, password: &str) -> bool {
        match self.by_name.get(user).and_then(|u| u.password.as_ref()) {
            Some(Password::Plain(expected)) => {
                constant_time_eq(expected.as_bytes(), password.as_bytes())
            }
            Some(Password::Hash(phc)) => PasswordHash::new(phc).is_ok_and(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            }),
            None => false,
        }
    }

    pub(crate) fn has_key(&self, user: &str, key: &PublicKey) -> bool {
        self.by_name
            .get(user)
            .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
    }
}

/// An argon2id PHC string for `password` (default parameters, random salt),
/// as the users file holds them.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt: [u8; 16] = rand::random();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Config(format!("cannot hash the password: {e}")))
}

/// Compares without an early exit, so the time taken does not tell how many
/// leading bytes of a guessed password were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeySpec, UserSpec};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ test@example";

    #[test]
    fn passwords_checked() {
        let mut config = Config::default();
        config.users.push(UserSpec {
            name: "alice".into(),
            password: "wonder".into(),
        });
        let users = Users::from_config(&config).expect("users");
        assert!(users.check_password("etl", "etl"));
        assert!(users.check_password("alice", "wonder"));
        assert!(!users.check_password("alice", "wonde"));
        assert!(!users.check_password("bob", "etl"));
        assert_eq!(users.names().collect::<Vec<_>>(), vec!["alice", "etl"]);
    }

    #[test]
    fn empty_default_password_disables_password_login() {
        let mut config = Config::default();
        config.sftp_password.clear();
        let users = Users::from_config(&config).expect("users");
        assert!(!users.check_password("etl", ""));
    }

    #[test]
    fn authorized_keys_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("# comment\n\n{KEY}\n")).expect("write");
        let mut config = Config::default();
        config.authorized_keys.push(KeySpec {
            name: "bob".into(),
            path,
        });
        let users = Users::from_config(&config).expect("users");
        let key = PublicKey::from_openssh(KEY).expect("key");
        assert!(users.has_key("bob", &key));
        assert!(!users.has_key("etl", &key));
        assert!(!users.check_password("bob", ""));
    }

    #[test]
    fn users_file_holds_argon2_hashes_and_profiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        std::fs::write(
            &path,
            format!("# uploaders\nup:{hash}:upload\netl:{hash}\n"),
        )
        .expect("write");
        let config = Config {
            users_file: Some(path.clone()),
            ..Config::default()
        };
        let users = Users::from_config(&config).expect("users");
        assert!(users.check_password("up", "s3cret"));
        assert!(!users.check_password("up", "s3cre"));
        assert!(
            users.check_password("etl", "s3cret"),
            "the file wins over the default"
        );
        assert!(!users.check_password("etl", "etl"));
        assert_eq!(users.profile("up"), Profile::Upload);
        assert_eq!(users.profile("etl"), Profile::Full);

        std::fs::write(&path, "bad:plaintext-password\n").expect("write");
        let err = Users::from_config(&config)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("line 1") && !err.contains("plaintext-password"),
            "{err}"
        );
    }

    #[test]
    fn bad_authorized_keys_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, "not a key\n").expect("write");
        let mut config = Config::default();
        config.authorized_keys.push(KeySpec {
            name: "bob".into(),
            path,
        });
        let err = Users::from_config(&config).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bob")));
    }
}
