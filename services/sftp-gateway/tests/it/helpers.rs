//! Test helpers: the gateway in-process on port 0, OpenSSH's `sftp` client.
//! OpenSSH's `sshd` and keys made with `ssh-keygen` come from `testkit`
//! ([`testkit::Sshd`], [`testkit::sshd::keygen`]).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use etl_proto::v1::{FileReady, sftp_gateway_client::SftpGatewayClient};
use etl_service::Shutdown;
use etl_sftp::{SftpAuth, SftpClient, SftpConfig};
use sftp_gateway::{Config, Running};
use tempfile::TempDir;
use testkit::Sshd;
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

/// How `etl-sftp` logs in to `sshd`: as its user, with its key.
pub(crate) fn sshd_config(sshd: &Sshd) -> SftpConfig {
    SftpConfig {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: sshd.user.clone(),
        auth: SftpAuth::KeyFile(sshd.key.clone()),
    }
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
