//! Child processes that never outlive the test (or `etlctl up`) that started them.
//!
//! Each server runs in its own process group, with stdout and stderr appended to a log
//! file, and is stopped on [`Drop`]. Drop does not run when the parent is killed
//! (SIGKILL from a test timeout, a crashed test binary, Ctrl-C), and a process-wide
//! singleton in a `static` is never dropped at all, so every server also gets a
//! *watchdog*: a tiny `sh` in a process group of its own whose stdin is a pipe from us.
//! It blocks reading that pipe; the kernel closes our end when our process ends, however
//! it ends, and the watchdog then stops the server (graceful signal, a grace period,
//! SIGKILL to the whole group) and removes the server's temporary directory.
//!
//! Why a pipe and not polling the parent's pid: EOF is immediate, cannot be fooled by pid
//! reuse, and needs no unsafe code (`prctl(PR_SET_PDEATHSIG)` or `atexit` would, and the
//! workspace forbids it). Why the watchdog has its own group: Ctrl-C signals the
//! terminal's foreground group, which would otherwise kill the watchdog before the
//! server.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

use crate::error::{Error, Result};

/// How long a server gets to stop after its graceful signal before the group is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

/// What the watchdog runs. `$1` server pid (= its process group), `$2` graceful signal,
/// `$3` grace in tenths of a second, `$4` directory to remove afterwards (may be empty).
/// `alive` treats a zombie as dead: while we live, our exited child stays a zombie until
/// we reap it, and `kill -0` would keep "seeing" it for the whole grace period.
const WATCHDOG_SCRIPT: &str = r#"
alive() {
  state=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ]
}
cat >/dev/null
kill -s "$2" "$1" 2>/dev/null
i=0
while alive "$1" && [ "$i" -lt "$3" ]; do sleep 0.1; i=$((i+1)); done
kill -s KILL -- "-$1" 2>/dev/null
if [ -n "$4" ]; then rm -rf -- "$4"; fi
exit 0
"#;

/// A running server: its process, its watchdog and its log file.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// Human name used in errors, e.g. `postgres on 127.0.0.1:5432`.
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
    stop_signal: Signal,
    exited: Option<ExitStatus>,
}

/// How to start a [`ServerProcess`].
pub(crate) struct ServerSpec<'a> {
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) log: &'a Path,
    /// The signal that asks this server for a clean, fast shutdown.
    pub(crate) stop_signal: Signal,
    /// Removed by the watchdog after the server is gone, if our process dies first.
    pub(crate) cleanup_dir: Option<&'a Path>,
}

impl ServerProcess {
    /// Spawns the server in its own process group with its output appended to the log,
    /// then its watchdog.
    pub(crate) fn spawn(spec: ServerSpec<'_>) -> Result<Self> {
        let ServerSpec {
            name,
            mut command,
            log,
            stop_signal,
            cleanup_dir,
        } = spec;
        let (stdout, stderr) = log_handles(log, &command)?;
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = command.spawn().map_err(|source| Error::Spawn {
            program: command_line(&command),
            source,
        })?;

        let mut process = ServerProcess {
            name,
            child,
            watchdog: None,
            log: log.to_path_buf(),
            stop_signal,
            exited: None,
        };
        let grace_tenths = STOP_GRACE.as_millis() / 100;
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("etl-stack-watchdog")
            .arg(process.child.id().to_string())
            .arg(signal_name(stop_signal))
            .arg(grace_tenths.to_string())
            .arg(cleanup_dir.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // If the watchdog cannot start, the server must not run unguarded: `process` is
        // dropped here, which stops it.
        process.watchdog = Some(watchdog.spawn().map_err(|source| Error::Spawn {
            program: "sh (etl-stack watchdog)".to_owned(),
            source,
        })?);
        Ok(process)
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err(Exited)` once the server has exited, with the tail of its log.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        match self.exited {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                server: self.name.clone(),
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log),
            }),
        }
    }

    /// Polls `ready` every 100 ms until it returns true, the server exits, or `timeout`
    /// passes.
    pub(crate) fn wait_ready(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // A last look: the server may have died while we probed.
                self.check_running()?;
                return Err(Error::NotReady {
                    server: self.name.clone(),
                    addr,
                    timeout,
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "process supervision runs on its own threads, outside the runtime"
            )]
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server: retires the watchdog, sends the graceful signal, waits up to
    /// `grace`, then kills the whole process group. Idempotent.
    pub(crate) fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.retire_watchdog();
        let pid = Pid::from_child(&self.child);
        let status = match self.exited {
            Some(status) => status,
            None => {
                let _ = kill_process(pid, self.stop_signal);
                let deadline = Instant::now() + grace;
                loop {
                    match self.child.try_wait() {
                        Ok(Some(status)) => break status,
                        Ok(None) if Instant::now() < deadline => {
                            #[expect(
                                clippy::disallowed_methods,
                                reason = "process supervision runs on its own threads, outside the runtime"
                            )]
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        _ => {
                            tracing::warn!(server = %self.name, log = %self.log.display(),
                                "server ignored its stop signal for {grace:?}; killing it");
                            let _ = kill_process_group(pid, Signal::KILL);
                            break self
                                .child
                                .wait()
                                .map_err(|e| Error::io("cannot wait for server", &self.log, e))?;
                        }
                    }
                }
            }
        };
        self.exited = Some(status);
        // Stragglers (e.g. backends of a killed postmaster) share the leader's group.
        let _ = kill_process_group(pid, Signal::KILL);
        Ok(status)
    }

    fn retire_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            // Kill its group (sh and its `cat`) before closing the pipe, so it cannot
            // mistake our orderly stop for our death and signal a reused pid later.
            let _ = kill_process_group(Pid::from_child(&watchdog), Signal::KILL);
            let _ = watchdog.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop(STOP_GRACE) {
            tracing::warn!(server = %self.name, "failed to stop: {e}");
        }
    }
}

/// Runs a one-shot command (e.g. `initdb`) to completion with its output appended to
/// `log`.
pub(crate) fn run_logged(mut command: Command, log: &Path) -> Result<()> {
    let (stdout, stderr) = log_handles(log, &command)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|source| Error::Spawn {
            program: command_line(&command),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command: command_line(&command),
            status,
            log: log.to_path_buf(),
            tail: log_tail(log),
        })
    }
}

/// Opens `log` for appending (creating it and its directory), writes a line saying what
/// is being started, and returns two handles for the child's stdout and stderr.
fn log_handles(log: &Path, command: &Command) -> Result<(File, File)> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create log directory", dir, e))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io("cannot open log file", log, e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    writeln!(
        file,
        "==== etl-stack (unix time {now}): {}",
        command_line(command)
    )
    .map_err(|e| Error::io("cannot write log file", log, e))?;
    let second = file
        .try_clone()
        .map_err(|e| Error::io("cannot open log file", log, e))?;
    Ok((file, second))
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    crate::logs::log_tail(log, 25)
}

/// `program arg arg…` for messages.
pub(crate) fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn signal_name(signal: Signal) -> &'static str {
    if signal == Signal::INT {
        "INT"
    } else if signal == Signal::KILL {
        "KILL"
    } else {
        "TERM"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(log: &Path) -> ServerProcess {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 600"]);
        ServerProcess::spawn(ServerSpec {
            name: "sleeper".to_owned(),
            command,
            log,
            stop_signal: Signal::TERM,
            cleanup_dir: None,
        })
        .expect("spawn sleeper")
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    #[test]
    fn stop_kills_the_process_and_its_watchdog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleeper.log");
        let mut process = sleeper(&log);
        let pid = process.pid();
        let watchdog = process.watchdog.as_ref().map(Child::id).expect("watchdog");
        process.check_running().expect("running");
        process.stop(Duration::from_secs(5)).expect("stop");
        assert!(!alive(pid));
        assert!(!alive(watchdog));
        assert!(process.check_running().is_err());
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("==== etl-stack"), "{text}");
    }

    #[test]
    fn exit_during_startup_reports_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("failing.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo could not bind port >&2; exit 3"]);
        let mut process = ServerProcess::spawn(ServerSpec {
            name: "failing".to_owned(),
            command,
            log: &log,
            stop_signal: Signal::TERM,
            cleanup_dir: None,
        })
        .expect("spawn");
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let err = process
            .wait_ready(addr, Duration::from_secs(10), || false)
            .expect_err("the process exits");
        let message = err.to_string();
        assert!(message.contains("could not bind port"), "{message}");
        assert!(message.contains("failing.log"), "{message}");
    }

    #[test]
    fn watchdog_stops_the_server_when_its_pipe_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleeper.log");
        let mut process = sleeper(&log);
        let pid = process.pid();
        // Closing our end of the pipe is what our death looks like to the watchdog.
        let mut watchdog = process.watchdog.take().expect("watchdog");
        drop(watchdog.stdin.take());
        watchdog.wait().expect("watchdog exits");
        let status = process.child.wait().expect("server reaped");
        assert!(!status.success());
        assert!(!alive(pid));
    }
}
