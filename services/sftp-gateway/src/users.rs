//! Who may log in, what they may do and where: password users (from the
//! flags, the environment, or a users file of argon2 hashes) and public-key
//! users, each with a permission profile and a root (a directory under the data
//! directory, the user's name unless configured; users with the same root share
//! one tree), built once at start. Only this module sees passwords; it never
//! logs them.

use std::{collections::BTreeMap, path::Path};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use russh::keys::{PublicKey, ssh_key::AuthorizedKeys};
use subtle::ConstantTimeEq as _;

use crate::{
    Config, Error,
    config::{Profile, check_root_name, check_user_name},
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
    /// The directory under the data directory; `None`: the user's name.
    root: Option<String>,
}

impl Default for User {
    fn default() -> Self {
        Self {
            password: None,
            keys: Vec::new(),
            profile: Profile::Full,
            root: None,
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
        for spec in &config.roots {
            // Checked again: a Config built in code skips the flag's parser.
            check_root_name(&spec.root).map_err(|e| Error::Config(format!("--root {e}")))?;
            if let Some(user) = users.by_name.get_mut(&spec.name) {
                user.root = Some(spec.root.clone());
            } else {
                return Err(Error::Config(format!(
                    "--root names user {:?}, who does not exist (add it with --user, --users-file or --authorized-key)",
                    spec.name
                )));
            }
        }
        Ok(users)
    }

    /// Reads `NAME:HASH[:PROFILE[:ROOT]]` lines (an argon2 PHC string holds no
    /// `:`, so the fields cannot be mistaken). Errors name the line, never the
    /// hash.
    fn read_users_file(&mut self, path: &Path) -> Result<(), Error> {
        let bad = |line: usize, reason: String| {
            Error::Config(format!(
                "users file {}, line {line}: {reason} (expected NAME:ARGON2-HASH[:full|upload|read[:ROOT]]; `sftp-gateway hash-password` prints a hash)",
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
            let mut parts = line.splitn(4, ':');
            let name = parts.next().unwrap_or_default().trim();
            let hash = parts.next().unwrap_or_default().trim();
            check_user_name(name).map_err(|e| bad(n + 1, e))?;
            PasswordHash::new(hash)
                .ok()
                .filter(|h| h.algorithm.as_str().starts_with("argon2"))
                .ok_or_else(|| bad(n + 1, "not an argon2 PHC hash ($argon2id$...)".into()))?;
            // An empty profile keeps the default, so a root can be given alone.
            let profile = match parts.next().map(str::trim) {
                None | Some("") => None,
                Some(profile) => Some(profile.parse().map_err(|e| bad(n + 1, e))?),
            };
            let root = match parts.next().map(str::trim) {
                None => None,
                Some(root) => {
                    check_root_name(root).map_err(|e| bad(n + 1, e))?;
                    Some(root.to_string())
                }
            };
            let user = self.by_name.entry(name.to_string()).or_default();
            user.password = Some(Password::Hash(hash.to_string()));
            if let Some(profile) = profile {
                user.profile = profile;
            }
            if root.is_some() {
                user.root = root;
            }
        }
        Ok(())
    }

    /// What `user` may do.
    pub(crate) fn profile(&self, user: &str) -> Profile {
        self.by_name.get(user).map_or(Profile::Read, |u| u.profile)
    }

    /// Every user with the name of its root, by user name.
    pub(crate) fn roots(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_name
            .iter()
            .map(|(name, user)| (name.as_str(), user.root.as_deref().unwrap_or(name)))
    }

    #[cfg(test)]
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

/// Whether `given` equals `expected`, in a time that depends only on
/// `expected`'s length: not on how many leading bytes of a guess were right
/// (`subtle`'s comparison has no early exit), nor on the guess's length
/// (`subtle` returns at once on a length mismatch, so the guess is first cut or
/// padded to `expected`'s length and the lengths compared apart).
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let padded: Vec<u8> = given
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(expected.len())
        .collect();
    let same_len = (expected.len() as u64).ct_eq(&(given.len() as u64));
    (same_len & expected.ct_eq(&padded[..])).into()
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
    fn plain_passwords_compare_whole() {
        assert!(constant_time_eq(b"wonder", b"wonder"));
        assert!(constant_time_eq(b"", b""));
        for wrong in [
            &b"wonde"[..],
            b"wonderx",
            b"wonder\0",
            b"Wonder",
            b"",
            b"xonder",
        ] {
            assert!(!constant_time_eq(b"wonder", wrong), "{wrong:?}");
        }
        // A guess padded with what the padding adds is still not the password.
        assert!(!constant_time_eq(b"ab\0", b"ab"));
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
    fn roots_from_the_users_file_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        let hash = hash_password("s3cret").expect("hash");
        std::fs::write(
            &path,
            format!("up:{hash}:upload:shared\nreader:{hash}::shared\nalone:{hash}:read\n"),
        )
        .expect("write");
        let mut config = Config {
            users_file: Some(path.clone()),
            ..Config::default()
        };
        config.roots.push(crate::config::RootSpec {
            name: "etl".into(),
            root: "shared".into(),
        });
        let users = Users::from_config(&config).expect("users");
        let roots: Vec<_> = users.roots().collect();
        assert_eq!(
            roots,
            [
                ("alone", "alone"),
                ("etl", "shared"),
                ("reader", "shared"),
                ("up", "shared")
            ]
        );
        assert_eq!(users.profile("up"), Profile::Upload);
        assert_eq!(
            users.profile("reader"),
            Profile::Full,
            "empty profile: default"
        );
        assert_eq!(users.profile("alone"), Profile::Read);

        for bad in ["../x", "a/b", ".trace", ""] {
            std::fs::write(&path, format!("ok:{hash}\nup:{hash}:upload:{bad}\n")).expect("write");
            let err = Users::from_config(&config)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("line 2") && err.contains(&format!("root {bad:?}")),
                "{bad:?}: {err}"
            );
        }

        let config = Config {
            roots: vec![crate::config::RootSpec {
                name: "nobody".into(),
                root: "x".into(),
            }],
            ..Config::default()
        };
        let err = Users::from_config(&config).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("nobody")));
        let config = Config {
            roots: vec![crate::config::RootSpec {
                name: "etl".into(),
                root: "..".into(),
            }],
            ..Config::default()
        };
        let err = Users::from_config(&config).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--root") && e.contains("\"..\"")));
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
