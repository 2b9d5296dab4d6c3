//! OpenSSH's `sshd` serving SFTP only, one private server per test, and the
//! `ssh-keygen` helpers that go with it.
//!
//! # Why
//! Code that speaks SFTP (the `etl-sftp` client, connect-manager's source and
//! its claims) must work with any SFTP server, not only our `sftp-gateway`. The
//! reference server is OpenSSH's: [`Sshd::start`] runs a throwaway `sshd` with
//! `internal-sftp` on a free loopback port, with its own host key, client key,
//! `sshd_config`, pid file and log in a temporary directory, and kills it on
//! drop. sftp-gateway's and connect-manager's tests share this one starter.
//!
//! # What it needs
//! - **root**: sshd's privilege separation needs it, and `/run/sshd` is created
//!   if missing (Debian creates it only when systemd starts the service). The
//!   login user is `root`, with a fresh key only (no passwords).
//! - `/usr/sbin/sshd` (Debian `openssh-server`) and `ssh-keygen`
//!   (`openssh-client`).
//!
//! Everything here panics on failure, as a test helper may: the message says
//! what to install, or carries sshd's log.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// How many free ports [`Sshd::start`] tries: another process may take the
/// port between [`free_port`](crate::free_port) and sshd's bind.
const START_ATTEMPTS: usize = 5;

/// How long one attempt waits for sshd's banner.
const BANNER_TIMEOUT: Duration = Duration::from_secs(10);

/// OpenSSH's `sshd` serving SFTP only (`internal-sftp`) on a free loopback
/// port, for one test: its own host key, `authorized_keys`, pid file and log in
/// a temporary directory; [`user`](Self::user) (`root`) logs in with
/// [`key`](Self::key) only; the SFTP session starts in [`root`](Self::root).
/// Needs root and `/usr/sbin/sshd` (see the [module docs](self)). Killed on drop.
///
/// [`start`](Self::start) blocks (up to a minute); from async tests, run it with
/// `tokio::task::spawn_blocking(Sshd::start)`.
#[derive(Debug)]
pub struct Sshd {
    /// The loopback port sshd listens on (`127.0.0.1`).
    pub port: u16,
    /// The login directory of SFTP sessions (`internal-sftp -d`), empty at start.
    pub root: PathBuf,
    /// The private key that may log in as [`user`](Self::user); the public key is
    /// beside it ([`pub_key`]).
    pub key: PathBuf,
    /// The server's private host key (ed25519); its public key is beside it
    /// ([`pub_key`]), for known_hosts files.
    pub host_key: PathBuf,
    /// The login user: `root`.
    pub user: String,
    dir: TempDir,
    child: Child,
}

impl Sshd {
    /// Makes the keys and config and starts sshd, trying up to five free ports;
    /// returns once sshd answers with its SSH banner. Panics with sshd's log if
    /// no attempt succeeds.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("sftp root");
        // sshd refuses to start without its privilege separation directory,
        // which Debian creates only when the service is started by systemd.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (run tests as root)");
        let host_key = keygen(dir.path(), "ssh_host_ed25519_key");
        let key = keygen(dir.path(), "id_ed25519");
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(pub_key(&key), &authorized).expect("authorized_keys");
        let config = dir.path().join("sshd_config");
        let log_path = dir.path().join("sshd.log");
        let mut last_log = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let port = crate::free_port();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     HostKey {host}\n\
                     PidFile {pid}\n\
                     AuthorizedKeysFile {auth}\n\
                     PermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     Subsystem sftp internal-sftp\n\
                     ForceCommand internal-sftp -d {root}\n",
                    host = host_key.display(),
                    pid = dir.path().join("sshd.pid").display(),
                    auth = authorized.display(),
                    root = root.display(),
                ),
            )
            .expect("sshd_config");
            let log = std::fs::File::create(&log_path).expect("sshd log");
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sshd runs (install openssh-server)");
            if wait_for_banner(port, BANNER_TIMEOUT) {
                return Self {
                    port,
                    root,
                    key,
                    host_key,
                    user: "root".into(),
                    dir,
                    child,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("sshd did not start; its log:\n{last_log}");
    }

    /// The temporary directory holding the keys, `sshd_config`, the log and
    /// [`root`](Self::root); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log so far (`-e`: what it would send to syslog), for failure
    /// messages; empty if unreadable.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ed25519 key pair made by `ssh-keygen` as `dir/name`, without a
/// passphrase; returns the private key path (the public key is beside it:
/// [`pub_key`]).
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    keygen_with_passphrase(dir, name, "")
}

/// Like [`keygen`], with the private key encrypted under `passphrase`.
pub fn keygen_with_passphrase(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "file-etl-test",
            "-f",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    path
}

/// The public key beside `private`: the same path with `.pub` appended.
pub fn pub_key(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Whether an SSH server answers on `127.0.0.1:port` with its banner within
/// `limit`. A bare TCP connect is not enough: a port taken by someone else
/// accepts too.
fn wait_for_banner(port: u16, limit: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 8];
            if stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-") {
                return true;
            }
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "Sshd::start is blocking: callers run it outside the runtime (spawn_blocking)"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
