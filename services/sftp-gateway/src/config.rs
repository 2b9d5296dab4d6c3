//! Flags and their `ETL_*` environment twins. Secrets (passwords) are never
//! shown: not by `Debug`, not in `--help` (env values hidden), not in logs.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

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

    /// Directory holding the users' roots (DATA_DIR/ROOT, with input/, finished/
    /// and error/ created at start; ROOT is the user's name unless --root or the
    /// users file names another) and, by default, the host key.
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

    /// Users file: one `NAME:HASH[:PROFILE[:ROOT]]` per line, HASH an argon2 PHC
    /// string (`sftp-gateway hash-password` prints one), PROFILE as for
    /// --permissions (empty: full), ROOT as for --root. Lines starting with '#'
    /// are comments. No password on the command line.
    #[arg(long, env = "ETL_SFTP_USERS_FILE", value_name = "PATH")]
    pub users_file: Option<PathBuf>,

    /// What user NAME may do: `full` (read, write, rename and delete anywhere in
    /// the root: the connector's user), `upload` (write, rename and delete only in
    /// the watched directories; read-only elsewhere, so finished/ and error/ can
    /// be read but not changed) or `read`. Repeatable; wins over the users file;
    /// users named in neither are `full` (today's behaviour).
    #[arg(
        long = "permissions",
        value_name = "NAME:PROFILE",
        env = "ETL_SFTP_PERMISSIONS",
        value_delimiter = ',',
        value_parser = parse_permission_spec
    )]
    pub permissions: Vec<PermissionSpec>,

    /// The root of user NAME: the directory DATA_DIR/ROOT (one name: no '/', no
    /// '..', not starting with '.'), instead of DATA_DIR/NAME. Users with the same
    /// root share one tree: each sees the others' files, and a WatchFiles
    /// subscriber gets the notices of every upload into its root, whoever made it.
    /// The quota (--user-quota) is per root. Repeatable; env twin: comma-separated.
    #[arg(
        long = "root",
        value_name = "NAME:ROOT",
        env = "ETL_SFTP_ROOTS",
        value_delimiter = ',',
        value_parser = parse_root_spec
    )]
    pub roots: Vec<RootSpec>,

    /// Time a client has from connecting to logging in (as OpenSSH's
    /// LoginGraceTime), e.g. 30s, 2m.
    #[arg(long, env = "ETL_SFTP_LOGIN_GRACE_TIME", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub login_grace_time: Duration,

    /// A logged-in connection without any SFTP request for this long, and no
    /// upload open, is closed; 0 never closes idle connections.
    #[arg(long, env = "ETL_SFTP_IDLE_TIMEOUT", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Connections not yet logged in, at most (as OpenSSH's MaxStartups); more
    /// are closed at once.
    #[arg(
        long,
        env = "ETL_SFTP_MAX_STARTUPS",
        value_name = "N",
        default_value_t = 10
    )]
    pub max_startups: usize,

    /// Open connections, at most.
    #[arg(
        long,
        env = "ETL_SFTP_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 100
    )]
    pub max_connections: usize,

    /// Open connections from one address, at most.
    #[arg(
        long,
        env = "ETL_SFTP_MAX_CONNECTIONS_PER_ADDR",
        value_name = "N",
        default_value_t = 20
    )]
    pub max_connections_per_addr: usize,

    /// Failed login attempts per connection before it is closed (as OpenSSH's
    /// MaxAuthTries).
    #[arg(
        long,
        env = "ETL_SFTP_MAX_AUTH_ATTEMPTS",
        value_name = "N",
        default_value_t = 6
    )]
    pub max_auth_attempts: usize,

    /// Penalty one failed login adds to its source address (as OpenSSH's
    /// PerSourcePenalties authfail). Once an address's penalty exceeds
    /// --auth-penalty-min, it may not connect or log in until it has run out.
    #[arg(long, env = "ETL_SFTP_AUTH_PENALTY", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub auth_penalty: Duration,

    /// Penalty from which an address is blocked.
    #[arg(long, env = "ETL_SFTP_AUTH_PENALTY_MIN", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub auth_penalty_min: Duration,

    /// Longest block of an address.
    #[arg(long, env = "ETL_SFTP_AUTH_PENALTY_MAX", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub auth_penalty_max: Duration,

    /// Addresses never penalized for failed logins (comma-separated IPs).
    #[arg(
        long = "auth-penalty-exempt",
        value_name = "IP",
        env = "ETL_SFTP_AUTH_PENALTY_EXEMPT",
        value_delimiter = ','
    )]
    pub auth_penalty_exempt: Vec<IpAddr>,

    /// Largest file a client may write (e.g. 512MiB, 1GiB); 0 = no limit.
    #[arg(long, env = "ETL_SFTP_MAX_FILE_SIZE", value_name = "BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub max_file_size: u64,

    /// Bytes each root may hold (all files, finished/ and error/ included),
    /// shared by the users whose root it is (see --root); 0 = no quota.
    #[arg(long, env = "ETL_SFTP_USER_QUOTA", value_name = "BYTES", default_value = "10GiB", value_parser = parse_size)]
    pub user_quota: u64,

    /// The gRPC control plane's token and TLS (`--api-token-file`, `--tls-cert`, …).
    #[command(flatten)]
    pub security: etl_service::ApiSecurity,
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
            users_file: None,
            permissions: Vec::new(),
            roots: Vec::new(),
            login_grace_time: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_startups: 10,
            max_connections: 100,
            max_connections_per_addr: 20,
            max_auth_attempts: 6,
            auth_penalty: Duration::from_secs(5),
            auth_penalty_min: Duration::from_secs(15),
            auth_penalty_max: Duration::from_secs(600),
            auth_penalty_exempt: Vec::new(),
            max_file_size: 1 << 30,
            user_quota: 10 << 30,
            security: etl_service::ApiSecurity::default(),
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
        for (flag, n) in [
            ("--max-startups", self.max_startups),
            ("--max-connections", self.max_connections),
            ("--max-connections-per-addr", self.max_connections_per_addr),
            ("--max-auth-attempts", self.max_auth_attempts),
        ] {
            if n == 0 {
                return Err(Error::Config(format!(
                    "{flag} must be at least 1 (no client could connect or log in)"
                )));
            }
        }
        if self.login_grace_time.is_zero() {
            return Err(Error::Config(
                "--login-grace-time must be more than 0 (e.g. 30s)".into(),
            ));
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
            .field("users_file", &self.users_file)
            .field("permissions", &self.permissions)
            .field("roots", &self.roots)
            .field("login_grace_time", &self.login_grace_time)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_startups", &self.max_startups)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_addr", &self.max_connections_per_addr)
            .field("max_auth_attempts", &self.max_auth_attempts)
            .field("auth_penalty", &self.auth_penalty)
            .field("auth_penalty_min", &self.auth_penalty_min)
            .field("auth_penalty_max", &self.auth_penalty_max)
            .field("auth_penalty_exempt", &self.auth_penalty_exempt)
            .field("max_file_size", &self.max_file_size)
            .field("user_quota", &self.user_quota)
            .field("security", &self.security)
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

/// What a user may do inside its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Everything: read, write, rename, delete (the connector's user).
    Full,
    /// Write, rename and delete only inside the watched directories (an
    /// uploader's temporaries and uploads); read-only elsewhere.
    Upload,
    /// Read-only.
    Read,
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "full" => Ok(Self::Full),
            "upload" => Ok(Self::Upload),
            "read" => Ok(Self::Read),
            other => Err(format!(
                "unknown permission profile {other:?} (expected full, upload or read)"
            )),
        }
    }
}

/// `--permissions NAME:PROFILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionSpec {
    pub name: String,
    pub profile: Profile,
}

/// `NAME:VALUE` of the per-user flags (not `--user`, whose value is a
/// password and must never be echoed): the user name checked, `VALUE` as
/// given; `form` is shown when the `:` is missing.
fn split_user_spec<'a>(s: &'a str, form: &str) -> Result<(&'a str, &'a str), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected {form}"))?;
    let name = name.trim();
    check_user_name(name)?;
    Ok((name, value))
}

/// Parses `NAME:PROFILE`.
pub fn parse_permission_spec(s: &str) -> Result<PermissionSpec, String> {
    let (name, profile) = split_user_spec(s, "NAME:PROFILE, e.g. extractor:upload")?;
    Ok(PermissionSpec {
        name: name.to_string(),
        profile: profile.parse()?,
    })
}

/// `--root NAME:ROOT`: the directory, under the data directory, that is user
/// NAME's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSpec {
    pub name: String,
    pub root: String,
}

/// Parses `NAME:ROOT`.
pub fn parse_root_spec(s: &str) -> Result<RootSpec, String> {
    let (name, root) = split_user_spec(s, "NAME:ROOT, e.g. extractor:etl")?;
    let root = root.trim();
    check_root_name(root)?;
    Ok(RootSpec {
        name: name.to_string(),
        root: root.to_string(),
    })
}

/// Parses a duration: a number with `ms`, `s`, `m` or `h` (no unit = seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 10m, 1h)"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m or h)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses a size in bytes: a number with an optional `K`, `M`, `G`, `T`
/// (powers of 1024; `KiB`, `KB` and `k` mean the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 512MiB, 1GiB)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use K, M, G or T, e.g. 512MiB)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
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
    let (name, path) = split_user_spec(s, "NAME:PATH of an authorized_keys file")?;
    if path.trim().is_empty() {
        return Err(format!("user {name:?}: empty authorized_keys path"));
    }
    Ok(KeySpec {
        name: name.to_string(),
        path: PathBuf::from(path.trim()),
    })
}

/// One plain path component that is not hidden and not an option: 1-64
/// characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// User names become directory names under the data directory, so they must
/// be one plain path component.
pub(crate) fn check_user_name(name: &str) -> Result<(), String> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with '.' or '-'"
        ))
    }
}

/// Root names become one directory under the data directory, beside the
/// gateway's own files: one plain path component (no `/`, no `..`), and not
/// hidden, since the data directory's dot names (`.trace`, the trace context
/// store) belong to the gateway and must never be a client's tree.
pub(crate) fn check_root_name(root: &str) -> Result<(), String> {
    if is_plain_name(root) {
        Ok(())
    } else {
        Err(format!(
            "root {root:?} must be one directory name under the data directory: 1-64 characters of A-Z a-z 0-9 . _ - (no '/', no '..'), not starting with '.' or '-'"
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
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10kb"), Ok(10 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn permissions_parse() {
        let spec = parse_permission_spec("up:upload").expect("valid");
        assert_eq!(spec.profile, Profile::Upload);
        assert_eq!(
            parse_permission_spec("r: read").map(|s| s.profile),
            Ok(Profile::Read)
        );
        assert!(parse_permission_spec("up:admin").is_err());
        assert!(parse_permission_spec("../x:read").is_err());
    }

    #[test]
    fn roots_parse_and_bad_names_are_refused() {
        let spec = parse_root_spec("extractor: etl").expect("valid");
        assert_eq!(
            spec,
            RootSpec {
                name: "extractor".into(),
                root: "etl".into()
            }
        );
        for bad in [
            "", "..", ".", ".trace", "a/b", "/etl", "../x", "-x", "a b", "é",
        ] {
            let err = check_root_name(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(parse_root_spec(&format!("u:{bad}")).is_err(), "{bad:?}");
        }
        assert!(parse_root_spec("etl").is_err(), "no root");
        assert!(parse_root_spec("../u:etl").is_err(), "bad user name");
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
