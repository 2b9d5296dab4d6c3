//! Running the real `etlctl` binary against a stack in a temp directory, on free ports.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub(crate) const ETLCTL: &str = env!("CARGO_BIN_EXE_etlctl");

/// A stack directory and a set of free ports, so tests never meet a running stack.
pub(crate) struct TestStack {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) pg_port: u16,
    pub(crate) kafka_port: u16,
    pub(crate) sftp_port: u16,
    pub(crate) base_port: u16,
    pub(crate) rest_port: u16,
    pub(crate) otlp_port: u16,
    pub(crate) jaeger_port: u16,
    /// connect-manager workers (`--workers`, passed only when more than one).
    pub(crate) workers: u16,
}

impl TestStack {
    pub(crate) fn new() -> Self {
        Self::with_workers(1)
    }

    /// A stack of `workers` connect-manager workers: worker k ≥ 1 listens on gRPC
    /// base+3+k and REST rest+k, so both runs of ports are picked free.
    pub(crate) fn with_workers(workers: u16) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("etlctl-it-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // The postgres user must reach <dir>/pg (temp dirs are 0700).
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        TestStack {
            tmp,
            pg_port: etl_stack::free_port(),
            kafka_port: etl_stack::free_port(),
            sftp_port: etl_stack::free_port(),
            base_port: etl_stack::free_port_run(4 + workers - 1),
            rest_port: etl_stack::free_port_run(workers),
            otlp_port: etl_stack::free_port(),
            jaeger_port: etl_stack::free_port(),
            workers,
        }
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.tmp.path().join(".etl")
    }

    /// `--dir` and every port flag.
    pub(crate) fn stack_args(&self) -> Vec<String> {
        vec![
            "--dir".into(),
            self.dir().display().to_string(),
            "--pg-port".into(),
            self.pg_port.to_string(),
            "--kafka-port".into(),
            self.kafka_port.to_string(),
            "--sftp-port".into(),
            self.sftp_port.to_string(),
            "--base-port".into(),
            self.base_port.to_string(),
            "--rest-port".into(),
            self.rest_port.to_string(),
            "--otlp-port".into(),
            self.otlp_port.to_string(),
            "--jaeger-port".into(),
            self.jaeger_port.to_string(),
        ]
        .into_iter()
        .chain(
            (self.workers > 1)
                .then(|| ["--workers".to_owned(), self.workers.to_string()])
                .into_iter()
                .flatten(),
        )
        .collect()
    }

    pub(crate) fn stack_json(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir().join("stack.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// `etlctl` with no `ETL_*` or `OTEL_*` variables from the caller's environment.
pub(crate) fn etlctl() -> Command {
    let mut command = Command::new(ETLCTL);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("ETL_") || key_text.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    command.env("LOG_FORMAT", "text");
    command
}

pub(crate) fn run(args: &[String]) -> Output {
    run_with_env(args, &[])
}

/// `run` with some environment variables set.
pub(crate) fn run_with_env(args: &[String], env: &[(&str, String)]) -> Output {
    let mut command = etlctl();
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.args(args).output().expect("run etlctl");
    eprintln!(
        "$ etlctl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        output.status
    );
    output
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A process: pid and start time (so a reused pid is not mistaken for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    start: u64,
}

fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … starttime is field 22 of stat, index 19 here.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// `pid` and every process below it.
pub(crate) fn tree(pid: u32) -> Vec<Proc> {
    let all: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).map(|(_, ppid, start)| (p, ppid, start)))
        .collect();
    let mut found: Vec<Proc> = all
        .iter()
        .filter(|(p, _, _)| *p == pid)
        .map(|&(pid, _, start)| Proc { pid, start })
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].pid;
        for &(p, ppid, start) in &all {
            if ppid == parent && !found.iter().any(|f| f.pid == p) {
                found.push(Proc { pid: p, start });
            }
        }
        i += 1;
    }
    found
}

/// Stops a foreground supervisor with SIGTERM and checks that it exited cleanly
/// and took every process of `processes` (its tree, taken before) with it.
pub(crate) fn terminate_supervisor(supervisor: &mut std::process::Child, processes: &[Proc]) {
    signal(u64::from(supervisor.id()), "TERM");
    let status = supervisor.wait().expect("wait");
    assert!(status.success(), "supervisor exited with {status}");
    let left: Vec<_> = processes.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "still running after the supervisor stopped: {left:?}"
    );
}

/// Sends `signal` (`KILL`, `TERM`, …) to `pid`, a process the test started.
pub(crate) fn signal(pid: u64, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Whether the process still runs (zombies count as gone: nobody may reap them in a
/// container whose init does not).
pub(crate) fn alive(proc: Proc) -> bool {
    matches!(stat(proc.pid), Some((state, _, start)) if start == proc.start && state != 'Z' && state != 'X')
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        #[expect(
            clippy::disallowed_methods,
            reason = "called from synchronous #[test]s only: no tokio runtime to block"
        )]
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fake service binaries: shell scripts that record their environment in their data
/// directory and sleep. `stubborn` ones ignore SIGTERM. `sftp-gateway host-key`, which
/// the supervisor runs first, publishes a made-up fingerprint as the real one does.
pub(crate) fn fake_services(dir: &Path, stubborn: &[&str]) {
    std::fs::create_dir_all(dir).expect("bin dir");
    for name in [
        "extractor",
        "sftp-gateway",
        "connect-manager",
        "sink-verifier",
    ] {
        let trap = if stubborn.contains(&name) {
            "trap '' TERM\n"
        } else {
            ""
        };
        let script = format!(
            "#!/bin/sh\nmkdir -p \"$ETL_DATA_DIR\"\nif [ \"$1\" = host-key ]; then echo SHA256:fake | tee \"$ETL_DATA_DIR/ssh_host_key.sha256\"; exit 0; fi\nenv > \"$ETL_DATA_DIR/env.txt\"\n{trap}exec sleep 600\n"
        );
        let path = dir.join(name);
        std::fs::write(&path, script).expect("write fake");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// Fails (does not skip) unless the four service binaries are built next to etlctl:
/// `cargo test -p etlctl` alone does not build other packages' binaries: run the whole
/// suite (`make test`, whose `cargo test --workspace` builds them), or `cargo build
/// --workspace --bins` first. A green run always means the real services ran.
pub(crate) fn require_binaries() {
    let bin_dir = Path::new(ETLCTL).parent().expect("bin dir").to_path_buf();
    let missing: Vec<&str> = [
        "extractor",
        "sftp-gateway",
        "connect-manager",
        "sink-verifier",
    ]
    .into_iter()
    .filter(|b| !bin_dir.join(b).is_file())
    .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not built in {}: run the whole suite (`make test`), or `cargo build --workspace --bins` first",
        bin_dir.display()
    );
}

/// Runs `etlctl down --dir` when dropped, so a failing test leaves no stack behind.
pub(crate) struct Down(pub(crate) String);

impl Drop for Down {
    fn drop(&mut self) {
        let output = run(&args(&["down", "--dir", &self.0]));
        if !output.status.success() && !std::thread::panicking() {
            panic!("down failed: {}", stderr(&output));
        }
    }
}
