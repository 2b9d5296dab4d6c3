//! Who may log in: password users and public-key users, built once at start
//! from the flags. Only this module sees passwords; it never logs them.

use std::collections::BTreeMap;

use russh::keys::{PublicKey, ssh_key::AuthorizedKeys};

use crate::{Config, Error, config::check_user_name};

#[derive(Default)]
struct User {
    password: Option<String>,
    keys: Vec<PublicKey>,
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
            default.password = Some(config.sftp_password.clone());
        }
        for spec in &config.users {
            check_user_name(&spec.name).map_err(Error::Config)?;
            users.by_name.entry(spec.name.clone()).or_default().password =
                Some(spec.password.clone());
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
        Ok(users)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    pub(crate) fn check_password(&self, user: &str, password: &str) -> bool {
        self.by_name
            .get(user)
            .and_then(|u| u.password.as_deref())
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), password.as_bytes()))
    }

    pub(crate) fn has_key(&self, user: &str, key: &PublicKey) -> bool {
        self.by_name
            .get(user)
            .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
    }
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
