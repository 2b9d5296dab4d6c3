//! Test helpers: the gateway in-process on port 0, OpenSSH's `sshd` on a free
//! port, OpenSSH's `sftp` client, keys made with `ssh-keygen`.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use etl_proto::v1::{FileReady, sftp_gateway_client::SftpGatewayClient};
use etl_service::Shutdown;
use etl_sftp::{SftpAuth, SftpClient, SftpConfig};
use sftp_gateway::{Config, Running};
use tempfile::TempDir;
use tokio::sync::broadcast;
use tonic::transport::Channel;

/// The gateway started in-process with its own data directory.
pub(crate) struct Gateway {
    pub(crate) sftp_addr: SocketAddr,
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) dir: TempDir,
    config: Config,
    running: Option<Running>,
    shutdown: Shutdown,
}

impl Gateway {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    /// Starts with the defaults of [`Config::ephemeral`], changed by `f`
    /// (which also gets the temporary directory, for key files and the like).
    pub(crate) async fn start_with(f: impl FnOnce(&mut Config, &Path)) -> Self {
        etl_telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut config = Config::ephemeral(&data_dir);
        f(&mut config, dir.path());
        let shutdown = Shutdown::new();
        let running = sftp_gateway::start(config.clone(), shutdown.clone())
            .await
            .expect("gateway starts");
        Self {
            sftp_addr: running.sftp_addr,
            grpc_addr: running.grpc_addr,
            data_dir,
            dir,
            config,
            running: Some(running),
            shutdown,
        }
    }

    /// Stops this gateway and starts a new instance with the same config on
    /// the same data directory (new ports): nothing kept in memory survives.
    pub(crate) async fn restart(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(40), running.wait())
                .await
                .expect("gateway stops in time")
                .expect("gateway stops cleanly");
        }
        self.shutdown = Shutdown::new();
        let running = sftp_gateway::start(self.config.clone(), self.shutdown.clone())
            .await
            .expect("gateway restarts");
        self.sftp_addr = running.sftp_addr;
        self.grpc_addr = running.grpc_addr;
        self.running = Some(running);
    }

    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<FileReady> {
        self.running().subscribe()
    }

    /// `<data-dir>/<user>`.
    pub(crate) fn root(&self, user: &str) -> PathBuf {
        self.data_dir.join(user)
    }

    pub(crate) fn config(&self, user: &str, auth: SftpAuth) -> SftpConfig {
        SftpConfig {
            host: self.sftp_addr.ip().to_string(),
            port: self.sftp_addr.port(),
            user: user.to_string(),
            auth,
        }
    }

    /// A client logged in as the default user `etl`/`etl`.
    pub(crate) async fn client(&self) -> SftpClient {
        SftpClient::connect(&self.config("etl", SftpAuth::Password("etl".into())))
            .await
            .expect("client connects")
    }

    pub(crate) async fn grpc(&self) -> SftpGatewayClient<Channel> {
        SftpGatewayClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("gRPC connects")
    }

    /// Trips the shutdown and waits (bounded) for both servers to stop.
    pub(crate) async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(40), running.wait())
                .await
                .expect("gateway stops in time")
                .expect("gateway stops cleanly");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The next event within 10 s.
pub(crate) async fn next_event(rx: &mut broadcast::Receiver<FileReady>) -> FileReady {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a FileReady within 10 s")
        .expect("event channel open")
}

/// Asserts no event arrives for a short while.
pub(crate) async fn assert_no_event(rx: &mut broadcast::Receiver<FileReady>) {
    if let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected event: {ev:?}");
    }
}

/// Deterministic bytes that do not repeat with a short period.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An ed25519 key pair made by `ssh-keygen`; returns the private key path
/// (the public key is beside it with `.pub`).
pub(crate) fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "file-etl-test", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    path
}

/// Like [`keygen`], with the private key encrypted under `passphrase`.
pub(crate) fn keygen_with_passphrase(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
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

pub(crate) fn pub_key(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How OpenSSH's `sftp` logs in.
pub(crate) enum CliAuth<'a> {
    Key(&'a Path),
    /// Given through `SSH_ASKPASS` (forced), so no terminal and no sshpass.
    Password(&'a str),
}

/// Output of one `sftp` run.
pub(crate) struct SftpRun {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl SftpRun {
    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs OpenSSH's `sftp` against `127.0.0.1:port` as `user` with `commands`.
/// Key logins use `-b` (stop at the first failing command); password logins
/// feed the commands on stdin, as `-b` would forbid password prompts.
pub(crate) async fn openssh_sftp(
    port: u16,
    user: &str,
    auth: CliAuth<'_>,
    commands: &str,
    scratch: &Path,
) -> SftpRun {
    let mut cmd = tokio::process::Command::new("sftp");
    cmd.args(["-P", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"])
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = match auth {
        CliAuth::Key(key) => {
            let batch = scratch.join(format!("batch-{}", rand_suffix()));
            std::fs::write(&batch, commands).expect("write batch");
            cmd.arg("-i").arg(key);
            cmd.args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PasswordAuthentication=no",
            ]);
            cmd.arg("-b").arg(&batch);
            cmd.stdin(Stdio::null());
            None
        }
        CliAuth::Password(password) => {
            let askpass = scratch.join(format!("askpass-{}", rand_suffix()));
            std::fs::write(
                &askpass,
                format!("#!/bin/sh\nprintf '%s\\n' '{password}'\n"),
            )
            .expect("write askpass");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
                    .expect("chmod");
            }
            cmd.env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0")
                .args([
                    "-o",
                    "PreferredAuthentications=password",
                    "-o",
                    "PubkeyAuthentication=no",
                ])
                .args(["-o", "NumberOfPasswordPrompts=1"])
                .stdin(Stdio::piped());
            Some(commands.to_string())
        }
    };
    cmd.arg(format!("{user}@127.0.0.1"));
    let mut child = cmd.spawn().expect("sftp runs (install openssh-client)");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(input.as_bytes())
            .await
            .expect("write sftp stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("sftp finishes within 60 s")
        .expect("sftp output");
    SftpRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// OpenSSH's `sshd` serving SFTP only (`internal-sftp`) on a free loopback
/// port, for one test: its own host key, `authorized_keys`, pid file and log
/// in a temporary directory; root logs in with a fresh key; the SFTP session
/// starts in [`Sshd::root`]. Needs root (sshd's privilege separation) and
/// `/usr/sbin/sshd` (Debian `openssh-server`). Killed on drop.
pub(crate) struct Sshd {
    pub(crate) port: u16,
    /// The login directory of SFTP sessions.
    pub(crate) root: PathBuf,
    /// The private key that may log in as `user`.
    pub(crate) key: PathBuf,
    pub(crate) user: String,
    pub(crate) dir: TempDir,
    child: Child,
}

impl Sshd {
    pub(crate) fn start() -> Self {
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
        for _attempt in 0..5 {
            let port = free_port();
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
            if wait_for_banner(port, Duration::from_secs(10)) {
                return Self {
                    port,
                    root,
                    key,
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

    pub(crate) fn config(&self) -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            auth: SftpAuth::KeyFile(self.key.clone()),
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an SSH server answers on `port` with its banner within `limit`.
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
            reason = "Sshd::start runs on spawn_blocking, outside the runtime"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Moves `input/<name>` to `error/` as connect-manager rejects a file: the
/// reason file `error/<name>.error.txt` first, then the rename.
pub(crate) async fn reject(client: &SftpClient, name: &str, reason: &[u8]) {
    client
        .write_atomic("error", &format!("{name}.error.txt"), reason)
        .await
        .expect("reason file");
    client
        .rename(&format!("input/{name}"), &format!("error/{name}"))
        .await
        .expect("reject");
}
