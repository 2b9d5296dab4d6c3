//! Flags and their `ETL_*` environment twins. Secrets (passwords) are never
//! shown: not by `Debug`, not in `--help` (env values hidden), not in logs.

use std::{fmt, net::SocketAddr, path::PathBuf};

use crate::Error;

/// Everything the gateway needs to start. Every flag has an env twin.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address of the SFTP (SSH) listener; port 0 picks a free port, which is logged.
    #[arg(long, env = "ETL_SFTP_ADDR", default_value = "127.0.0.1:2222")]
    pub sftp_addr: String,

    /// Address of the gRPC listener (etl.v1.SftpGateway, grpc.health.v1, reflection).
    #[arg(long, env = "ETL_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: String,

    /// Directory holding one root per user (DATA_DIR/USER, with input/, finished/
    /// and error/ created at start) and, by default, the host key.
    #[arg(long, env = "ETL_DATA_DIR", default_value = "./data/sftp")]
    pub data_dir: PathBuf,

    /// Name of the default user, who always exists.
    #[arg(long, env = "ETL_SFTP_USER", default_value = "etl")]
    pub sftp_user: String,

    /// Password of the default user (default: etl); an empty value disables password
    /// login for it (key login through --authorized-key still works).
    #[arg(
        long,
        env = "ETL_SFTP_PASSWORD",
        default_value = "etl",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub sftp_password: String,

    /// A further password user, NAME:PASSWORD (split at the first ':'). Repeatable;
    /// the env twin takes a comma-separated list, so such passwords cannot hold a comma.
    #[arg(
        long = "user",
        value_name = "NAME:PASSWORD",
        env = "ETL_SFTP_USERS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = parse_user
    )]
    pub users: Vec<UserSpec>,

    /// Public-key login for user NAME: PATH is an OpenSSH authorized_keys file (one
    /// key per line, e.g. a copy of id_ed25519.pub). Repeatable; the user is created
    /// if it has no password. Env twin: comma-separated list.
    #[arg(
        long = "authorized-key",
        value_name = "NAME:PATH",
        env = "ETL_SFTP_AUTHORIZED_KEYS",
        value_delimiter = ',',
        value_parser = parse_key_spec
    )]
    pub authorized_keys: Vec<KeySpec>,

    /// The server's host key, an OpenSSH private key. Generated (ed25519) on first
    /// start when missing and reused after. Default: DATA_DIR/ssh_host_ed25519_key.
    #[arg(long, env = "ETL_SFTP_HOST_KEY", value_name = "PATH")]
    pub host_key: Option<PathBuf>,

    /// Directories, relative to each user's root, whose completed uploads are
    /// announced as FileReady events. Comma-separated or repeated.
    #[arg(
        long = "watch-dir",
        value_name = "DIR",
        env = "ETL_SFTP_WATCH_DIRS",
        value_delimiter = ',',
        default_value = "input"
    )]
    pub watch_dirs: Vec<String>,
}

impl Default for Config {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        Self {
            sftp_addr: "127.0.0.1:2222".into(),
            grpc_addr: "127.0.0.1:50052".into(),
            data_dir: PathBuf::from("./data/sftp"),
            sftp_user: "etl".into(),
            sftp_password: "etl".into(),
            users: Vec::new(),
            authorized_keys: Vec::new(),
            host_key: None,
            watch_dirs: vec!["input".into()],
        }
    }
}

impl Config {
    /// Defaults with both listeners on `127.0.0.1:0` and the given data
    /// directory: what tests and in-process supervisors want.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            sftp_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    /// Where the host key lives.
    pub fn host_key_path(&self) -> PathBuf {
        self.host_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("ssh_host_ed25519_key"))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (flag, addr) in [
            ("--sftp-addr", &self.sftp_addr),
            ("--grpc-addr", &self.grpc_addr),
        ] {
            // Host names are fine too (bind resolves them); only catch obvious typos.
            if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
                return Err(Error::Config(format!(
                    "{flag} {addr:?} is not HOST:PORT (e.g. 127.0.0.1:2222)"
                )));
            }
        }
        check_user_name(&self.sftp_user).map_err(Error::Config)?;
        for dir in &self.watch_dirs {
            let trimmed = dir.trim_matches('/');
            if trimmed.is_empty()
                || trimmed
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty())
            {
                return Err(Error::Config(format!(
                    "--watch-dir {dir:?} must be a plain directory inside the user's root, e.g. input"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("sftp_addr", &self.sftp_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("data_dir", &self.data_dir)
            .field("sftp_user", &self.sftp_user)
            .field("sftp_password", &"***")
            .field("users", &self.users)
            .field("authorized_keys", &self.authorized_keys)
            .field("host_key", &self.host_key)
            .field("watch_dirs", &self.watch_dirs)
            .finish()
    }
}

/// A password user from `--user NAME:PASSWORD`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserSpec({}:***)", self.name)
    }
}

/// A key user from `--authorized-key NAME:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub path: PathBuf,
}

/// Parses `NAME:PASSWORD`. The error never repeats the input (it holds a password).
pub fn parse_user(s: &str) -> Result<UserSpec, String> {
    let (name, password) = s.split_once(':').ok_or_else(|| {
        "expected NAME:PASSWORD (a ':' between user name and password)".to_string()
    })?;
    let name = name.trim();
    check_user_name(name)?;
    if password.is_empty() {
        return Err(format!("user {name:?}: empty password"));
    }
    Ok(UserSpec {
        name: name.to_string(),
        password: password.to_string(),
    })
}

/// Parses `NAME:PATH`.
pub fn parse_key_spec(s: &str) -> Result<KeySpec, String> {
    let (name, path) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME:PATH of an authorized_keys file"))?;
    let name = name.trim();
    check_user_name(name)?;
    if path.trim().is_empty() {
        return Err(format!("user {name:?}: empty authorized_keys path"));
    }
    Ok(KeySpec {
        name: name.to_string(),
        path: PathBuf::from(path.trim()),
    })
}

/// User names become directory names under the data directory, so they must
/// be one plain path component.
pub(crate) fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_spec_splits_at_first_colon() {
        let u = parse_user("alice:pa:ss").expect("valid");
        assert_eq!(u.name, "alice");
        assert_eq!(u.password, "pa:ss");
    }

    #[test]
    fn user_spec_errors_do_not_echo_password() {
        let err = parse_user("../x:secret").expect_err("bad name");
        assert!(!err.contains("secret"), "{err}");
        let err = parse_user("nocolon-secret").expect_err("no colon");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn bad_user_names_refused() {
        for bad in ["", "..", ".hidden", "a/b", "-x", "a b"] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        for good in ["etl", "user_1", "a.b-c"] {
            assert!(check_user_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn key_spec_parses() {
        let k = parse_key_spec("bob:/tmp/keys").expect("valid");
        assert_eq!(k.name, "bob");
        assert_eq!(k.path, PathBuf::from("/tmp/keys"));
        assert!(parse_key_spec("bob").is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let c = Config {
            sftp_password: "topsecret".into(),
            users: vec![UserSpec {
                name: "a".into(),
                password: "alsosecret".into(),
            }],
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("alsosecret"),
            "{shown}"
        );
    }

    #[test]
    fn watch_dirs_validated() {
        let mut c = Config {
            watch_dirs: vec!["../x".into()],
            ..Config::default()
        };
        assert!(c.validate().is_err());
        c.watch_dirs = vec!["input".into(), "inbox/new".into()];
        assert!(c.validate().is_ok());
    }
}
